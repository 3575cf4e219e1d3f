"""`[serve.catalog]`: who may use the REST catalog, with which scope, and what clients are told about storage.

    [serve.catalog]
    enabled = true                 # `icebergdo serve` mounts the catalog at /catalog
    anonymous = "none"             # scope of a request without credentials: "none" (401), "read" or "write"
    token_ttl = 3600               # seconds an OAuth2 access token from /v1/oauth/tokens lives

    [[serve.catalog.tokens]]       # static bearer tokens, stored as SHA-256 hashes
    name = "dashboards"
    sha256 = "…"                   # `icebergdo attach token --scope read` prints a new token and its hash
    scope = "read"

    [[serve.catalog.clients]]      # OAuth2 client credentials (DuckDB CLIENT_ID/CLIENT_SECRET, Spark `credential`)
    client_id = "spark"
    secret_sha256 = "…"
    scope = "write"

    [serve.catalog.client_config]  # extra per-table config handed to every client (string values)
    "s3.endpoint" = "https://storage.example.com"

`uri` (optional) is the URL clients use, for `icebergdo attach` (default http://127.0.0.1:8181/catalog).
Tokens of `[[serve.tokens]]` (the ingest service's) whose `scopes` include "catalog" are accepted
too, with write scope; `[serve] auth = false` makes the catalog anonymous-write unless
`anonymous` says otherwise.

Tokens and secrets are random (256 bits from `attach token`), so one SHA-256 is the right hash:
there is nothing to brute-force that a slow password hash would protect. A request's token is
compared by hash in constant time and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from icebergdo.config import Config
from icebergdo.errors import ConfigError

Scope = Literal["read", "write"]
SCOPES: tuple[Scope, ...] = ("read", "write")
DEFAULT_TOKEN_TTL = 3600
DEFAULT_URI = "http://127.0.0.1:8181/catalog"
_HEX64 = frozenset("0123456789abcdef")


def token_hash(token: str) -> str:
    """The SHA-256 hex digest a config stores for a token or client secret."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return "idt_" + secrets.token_urlsafe(32)


def hash_matches(candidate: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(candidate), stored_hash)


@dataclass(frozen=True)
class TokenSpec:
    name: str
    sha256: str = field(repr=False)
    scope: Scope


@dataclass(frozen=True)
class ClientSpec:
    client_id: str
    secret_sha256: str = field(repr=False)
    scope: Scope


@dataclass(frozen=True)
class RestServeSettings:
    """Who may use the catalog and what clients are told. `tokens_plain` is for in-process servers only."""

    enabled: bool = False
    tokens: tuple[TokenSpec, ...] = ()
    clients: tuple[ClientSpec, ...] = ()
    anonymous: Scope | None = None
    token_ttl: int = DEFAULT_TOKEN_TTL
    client_config: dict[str, str] = field(default_factory=dict)
    uri: str = DEFAULT_URI
    signing_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    @property
    def has_credentials(self) -> bool:
        return bool(self.tokens or self.clients)

    @classmethod
    def from_config(cls, config: Config) -> RestServeSettings:
        serve = config.section("serve")
        raw = serve.get("catalog") or {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{config.source}: [serve.catalog] must be a table")
        return cls.from_mapping(raw, source=f"{config.source}: [serve.catalog]")

    @classmethod
    def coerce(cls, settings: Any, config: Config) -> RestServeSettings:
        """Ours as they are; None → `[serve.catalog]` of `config`; the ingest service's `Settings` → ours.

        From the service's settings: `catalog_options` is our `[serve.catalog]`, its tokens with the
        "catalog" scope are write tokens here, and `auth = false` means anonymous write (unless
        `anonymous` is set).
        """
        if isinstance(settings, RestServeSettings):
            return settings
        if settings is None:
            return cls.from_config(config)
        options = dict(getattr(settings, "catalog_options", None) or {})
        base = cls.from_mapping({"enabled": True, **options}, source=f"{config.source}: [serve.catalog]")
        shared = tuple(
            TokenSpec(str(t.name), str(t.digest), "write") for t in getattr(settings, "tokens", ()) if "catalog" in getattr(t, "scopes", ())
        )
        anonymous = base.anonymous
        if "anonymous" not in options and getattr(settings, "auth", True) is False:
            anonymous = "write"
        from dataclasses import replace

        return replace(base, tokens=base.tokens + shared, anonymous=anonymous)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, source: str = "[serve.catalog]") -> RestServeSettings:
        unknown = set(raw) - {"enabled", "tokens", "clients", "anonymous", "token_ttl", "client_config", "uri"}
        if unknown:
            raise ConfigError(f"{source}: unknown keys: {', '.join(sorted(unknown))}")
        tokens = tuple(_token(t, f"{source} tokens[{i}]") for i, t in enumerate(_list(raw.get("tokens"), f"{source} tokens")))
        clients = tuple(_client(c, f"{source} clients[{i}]") for i, c in enumerate(_list(raw.get("clients"), f"{source} clients")))
        ids = [c.client_id for c in clients]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"{source}: a client_id appears twice")
        anonymous = raw.get("anonymous", "none")
        if anonymous not in ("none", *SCOPES):
            raise ConfigError(f"{source}: anonymous must be 'none', 'read' or 'write', got {anonymous!r}")
        ttl = raw.get("token_ttl", DEFAULT_TOKEN_TTL)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 60:
            raise ConfigError(f"{source}: token_ttl must be a number of seconds >= 60, got {ttl!r}")
        client_config = raw.get("client_config") or {}
        if not isinstance(client_config, Mapping):
            raise ConfigError(f"{source}: client_config must be a table of string values")
        enabled = raw.get("enabled", False)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{source}: enabled must be true or false")
        return cls(
            enabled=enabled,
            tokens=tokens,
            clients=clients,
            anonymous=None if anonymous == "none" else anonymous,
            token_ttl=ttl,
            client_config={str(k): str(v) for k, v in client_config.items()},
            uri=str(raw.get("uri") or DEFAULT_URI).rstrip("/"),
        )

    @classmethod
    def with_token(cls, token: str, scope: Scope = "write", **kwargs: Any) -> RestServeSettings:
        """Settings accepting one bearer token (an in-process server handing its token to DuckDB)."""
        return cls(enabled=True, tokens=(TokenSpec("local", token_hash(token), scope),), **kwargs)


def _list(value: Any, where: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError(f"{where} must be an array of tables ([[…]])")
    return value


def _scope(value: Any, where: str) -> Scope:
    if value not in SCOPES:
        raise ConfigError(f"{where}: scope must be 'read' or 'write', got {value!r}")
    return value


def _sha(value: Any, key: str, where: str) -> str:
    text = str(value or "").strip().lower()
    if len(text) != 64 or not set(text) <= _HEX64:
        raise ConfigError(f"{where}: {key} must be the 64-hex-digit SHA-256 of the secret (`icebergdo attach token` prints one)")
    return text


def _token(raw: Mapping[str, Any], where: str) -> TokenSpec:
    unknown = set(raw) - {"name", "sha256", "scope"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys: {', '.join(sorted(unknown))}")
    return TokenSpec(name=str(raw.get("name") or "token"), sha256=_sha(raw.get("sha256"), "sha256", where), scope=_scope(raw.get("scope", "read"), where))


def _client(raw: Mapping[str, Any], where: str) -> ClientSpec:
    unknown = set(raw) - {"client_id", "secret_sha256", "scope"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys: {', '.join(sorted(unknown))}")
    client_id = str(raw.get("client_id") or "")
    if not client_id:
        raise ConfigError(f"{where}: client_id is required")
    return ClientSpec(client_id=client_id, secret_sha256=_sha(raw.get("secret_sha256"), "secret_sha256", where), scope=_scope(raw.get("scope", "read"), where))
