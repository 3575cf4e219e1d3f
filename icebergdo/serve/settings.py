"""The `[serve]` section of the config: where to listen, who may write, how webhooks are verified.

Parsed once at start, so a typo fails `icebergdo serve` with the key at fault (exit code 2) instead
of surfacing as a 500 on the first request. Secrets are handled like every other icebergdo secret:
bearer tokens are stored only as SHA-256 digests (`icebergdo serve --new-token` prints one), webhook
signing secrets usually come from `${ENV}` interpolation, and `Settings.secrets()` lists them for
`icebergdo.redact.scrub`. Nothing here ever prints a secret: the reprs mask them.

    [serve]
    host = "127.0.0.1"                # bind address (default: loopback only)
    port = 8181
    auth = true                       # bearer tokens required (webhook routes verify signatures instead)
    max_body = "4MiB"                 # request body limit, as received and after gzip decoding
    wal_dir = "/var/lib/icebergdo/wal"

    [[serve.tokens]]
    name = "shop-backend"
    sha256 = "9f86d081…"              # hex SHA-256 of the token
    scopes = ["ingest"]               # "ingest" (default) and/or "catalog"
    sources = ["shop"]                # allowed `source` values ("*" or absent: any)
    namespaces = ["shop"]             # allowed `namespace` values, also for /v1/cdc ("*" or absent: any)

    [serve.webhooks.stripe]
    provider = "stripe"               # stripe | github | standard (Svix) | hmac
    secret = "${STRIPE_WEBHOOK_SECRET}"

    [serve.rate_limits]               # events per second per source; "*" for every other source
    stripe = 200
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icebergdo.config import Config
from icebergdo.errors import ConfigError
from icebergdo.writer import DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8181
DEFAULT_MAX_BODY = 4 * 1024 * 1024
DEFAULT_TOLERANCE = 300.0  # seconds; Stripe's and Standard Webhooks' default
DEFAULT_IDEMPOTENCY_WINDOW = 24 * 3600.0
DEFAULT_IDEMPOTENCY_KEYS = 100_000
DEFAULT_PROBE_INTERVAL = 2.0
DEFAULT_PROBE_TIMEOUT = 5.0
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
DEFAULT_MAINTENANCE_EVERY = 3600.0
PROVIDERS = ("stripe", "github", "standard", "svix", "hmac")
SCOPES = ("ingest", "catalog")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "mi": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def hash_token(token: str) -> str:
    """The stored form of a bearer token: hex SHA-256 (tokens are random, so no salt or KDF is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_size(value: Any, where: str) -> int:
    """Bytes from an integer or text such as "4MiB", "512kB"."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _SIZE.match(str(value)) if isinstance(value, str) else None
    if not m:
        raise ConfigError(f"{where}: expected a size such as 4194304 or \"4MiB\", got {value!r}")
    n = int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    if n < 1:
        raise ConfigError(f"{where}: must be positive, got {value!r}")
    return n


def parse_seconds(value: Any, where: str, *, allow_zero: bool = False) -> float:
    """Seconds from a number or text such as "500ms", "5m", "1h"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        n = float(value)
    else:
        m = _DURATION.match(str(value)) if isinstance(value, str) else None
        if not m:
            raise ConfigError(f"{where}: expected seconds or a duration such as \"5m\", got {value!r}")
        n = float(m.group(1)) * _DURATION_UNITS[m.group(2) or ""]
    if n < 0 or (n == 0 and not allow_zero):
        raise ConfigError(f"{where}: must be {'>= 0' if allow_zero else 'positive'}, got {value!r}")
    return n


def _names(value: Any, where: str) -> frozenset[str] | None:
    """An allow-list: None (any) for absent or "*", else the set of names."""
    if value is None or value == "*" or value == ["*"]:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: expected a list of names (or \"*\"), got {value!r}")
    return frozenset(value)


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")


@dataclass(frozen=True)
class Token:
    """One bearer token: its digest, what it may do, and which sources/namespaces it may write."""

    name: str
    digest: str = field(repr=False)
    scopes: frozenset[str] = frozenset({"ingest"})
    sources: frozenset[str] | None = None  # None: any
    namespaces: frozenset[str] | None = None

    def allows_source(self, source: str | None) -> bool:
        return self.sources is None or (source is not None and source in self.sources)

    def allows_namespace(self, namespace: str | None) -> bool:
        return self.namespaces is None or namespace is None or namespace in self.namespaces

    @property
    def only_source(self) -> str | None:
        """The source filled in for events that name none, when the token allows exactly one."""
        return next(iter(self.sources)) if self.sources is not None and len(self.sources) == 1 else None


@dataclass(frozen=True)
class WebhookSource:
    """How `/v1/webhooks/{name}` verifies its deliveries."""

    name: str
    provider: str
    secrets: tuple[str, ...] = field(repr=False)  # several during a rotation: any one may sign
    tolerance: float = DEFAULT_TOLERANCE
    header: str = "X-Signature"  # hmac provider: the header carrying the hex (or sha256=hex) digest
    timestamp_header: str | None = None  # hmac provider: signed content is "{timestamp}.{body}" when set


@dataclass(frozen=True)
class Settings:
    """Everything `create_app` and `icebergdo serve` need, parsed from `[serve]` (all optional)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    auth: bool = True
    tokens: tuple[Token, ...] = ()
    max_body: int = DEFAULT_MAX_BODY
    wal_dir: Path | None = None
    max_rows: int = DEFAULT_MAX_ROWS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_age: float = DEFAULT_MAX_AGE
    max_pending_rows: int | None = None
    max_pending_bytes: int | None = None
    block_timeout: float = 0.0  # wait this long for room before answering 429 (0: answer at once)
    idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW
    idempotency_keys: int = DEFAULT_IDEMPOTENCY_KEYS
    rate_limits: Mapping[str, float] = field(default_factory=dict)
    webhooks: Mapping[str, WebhookSource] = field(default_factory=dict)
    probe_interval: float = DEFAULT_PROBE_INTERVAL
    probe_timeout: float = DEFAULT_PROBE_TIMEOUT
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    maintenance: bool = False
    maintenance_every: float = DEFAULT_MAINTENANCE_EVERY
    catalog: bool = False  # mount the Iceberg REST catalog at /catalog
    catalog_options: Mapping[str, Any] = field(default_factory=dict)
    source: str = "defaults"

    @classmethod
    def from_config(cls, config: Config) -> Settings:
        """`[serve]` of `config`; maintenance defaults to on for the embedded default (a `--home`)."""
        return cls.from_section(config.section("serve"), source=config.source, embedded=config.home is not None)

    @classmethod
    def from_section(cls, raw: Mapping[str, Any], *, source: str = "config", embedded: bool = False) -> Settings:
        where = f"{source}: [serve]"
        _check_keys(raw, {
            "host", "port", "auth", "tokens", "max_body", "wal_dir", "max_rows", "max_bytes", "max_age",
            "max_pending_rows", "max_pending_bytes", "block_timeout", "idempotency_window", "idempotency_keys",
            "rate_limits", "webhooks", "probe_interval", "probe_timeout", "shutdown_timeout", "maintenance", "catalog",
        }, where)
        kw: dict[str, Any] = {"source": source}
        if "host" in raw:
            if not isinstance(raw["host"], str) or not raw["host"]:
                raise ConfigError(f"{where} host: expected an address, got {raw['host']!r}")
            kw["host"] = raw["host"]
        if "port" in raw:
            port = _int(raw["port"], f"{where} port", minimum=0)
            if port > 65535:
                raise ConfigError(f"{where} port: must be at most 65535, got {port}")
            kw["port"] = port
        if "auth" in raw:
            kw["auth"] = _bool(raw["auth"], f"{where} auth")
        kw["tokens"] = tuple(_token(t, f"{where} tokens[{i}]") for i, t in enumerate(_list(raw.get("tokens"), f"{where} tokens")))
        names = [t.name for t in kw["tokens"]]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where} tokens: names must be unique, got {names}")
        if "max_body" in raw:
            kw["max_body"] = parse_size(raw["max_body"], f"{where} max_body")
        if raw.get("wal_dir"):
            kw["wal_dir"] = Path(str(raw["wal_dir"])).expanduser()
        for key in ("max_rows", "max_pending_rows", "idempotency_keys"):
            if key in raw:
                kw[key] = _int(raw[key], f"{where} {key}", minimum=1)
        for key in ("max_bytes", "max_pending_bytes"):
            if key in raw:
                kw[key] = parse_size(raw[key], f"{where} {key}")
        for key in ("max_age", "idempotency_window", "probe_interval", "probe_timeout", "shutdown_timeout"):
            if key in raw:
                kw[key] = parse_seconds(raw[key], f"{where} {key}")
        if "block_timeout" in raw:
            kw["block_timeout"] = parse_seconds(raw["block_timeout"], f"{where} block_timeout", allow_zero=True)
        limits = raw.get("rate_limits") or {}
        if not isinstance(limits, Mapping):
            raise ConfigError(f"{where} rate_limits: expected a table of source = events per second")
        rates: dict[str, float] = {}
        for name, rate in limits.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
                raise ConfigError(f"{where} rate_limits.{name}: expected events per second > 0, got {rate!r}")
            rates[str(name)] = float(rate)
        kw["rate_limits"] = rates
        hooks = raw.get("webhooks") or {}
        if not isinstance(hooks, Mapping):
            raise ConfigError(f"{where} webhooks: expected a table of [serve.webhooks.SOURCE] tables")
        kw["webhooks"] = {str(name): _webhook(str(name), spec, f"{where} webhooks.{name}") for name, spec in hooks.items()}
        maint = raw.get("maintenance", {})
        if isinstance(maint, bool):
            maint = {"enabled": maint}
        if not isinstance(maint, Mapping):
            raise ConfigError(f"{where} maintenance: expected a table (enabled, every) or true/false")
        _check_keys(maint, {"enabled", "every"}, f"{where} maintenance")
        kw["maintenance"] = _bool(maint.get("enabled", embedded), f"{where} maintenance.enabled")
        if "every" in maint:
            kw["maintenance_every"] = parse_seconds(maint["every"], f"{where} maintenance.every")
        cat = raw.get("catalog", {})
        if isinstance(cat, bool):
            cat = {"enabled": cat}
        if not isinstance(cat, Mapping):
            raise ConfigError(f"{where} catalog: expected a table ([serve.catalog] enabled = true, ...)")
        kw["catalog"] = _bool(cat.get("enabled", False), f"{where} catalog.enabled")
        kw["catalog_options"] = {k: v for k, v in cat.items() if k != "enabled"}
        return cls(**kw)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with CLI flags applied (None means "keep")."""
        from dataclasses import replace

        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    # -- auth ---------------------------------------------------------------------------------
    def token_for(self, presented: str, scope: str) -> Token | None:
        """The configured token matching `presented` that has `scope`; constant-time digest comparison."""
        digest = hash_token(presented)
        found = None
        for t in self.tokens:  # compare with every token: the time taken does not tell which one matched
            if hmac.compare_digest(t.digest, digest) and scope in t.scopes:
                found = t
        return found

    def secrets(self) -> list[str]:
        """Webhook signing secrets, for scrubbing foreign error texts."""
        return [s for w in self.webhooks.values() for s in w.secrets]

    def wal_folder(self, config: Config) -> Path:
        """`wal_dir`, else `{home}/wal/serve` (embedded) or a per-lakehouse folder in the user's state dir."""
        if self.wal_dir is not None:
            return self.wal_dir
        if config.home is not None:
            return config.home / "wal" / "serve"
        state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        key = hashlib.sha256(f"{config.catalog_uri}|{config.warehouse}".encode()).hexdigest()[:16]
        return state / "icebergdo" / "serve" / key / "wal"

    def rate_for(self, source: str | None) -> float | None:
        """Events per second allowed for `source` (None: unlimited)."""
        if source is not None and source in self.rate_limits:
            return self.rate_limits[source]
        return self.rate_limits.get("*")


def _int(value: Any, where: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected an array of tables ([[serve.tokens]])")
    return value


def _token(raw: Any, where: str) -> Token:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table")
    _check_keys(raw, {"name", "sha256", "scopes", "sources", "namespaces"}, where)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: 'name' is required")
    digest = raw.get("sha256")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
        raise ConfigError(f"{where} ({name}): 'sha256' must be the 64-hex-digit SHA-256 of the token "
                          "(`icebergdo serve --new-token NAME` prints one); plain tokens are never stored")
    scopes = _names(raw.get("scopes", ["ingest"]), f"{where} scopes")
    if scopes is None:
        scopes = frozenset(SCOPES)
    bad = sorted(scopes - set(SCOPES))
    if bad:
        raise ConfigError(f"{where} scopes: unknown {', '.join(bad)} (known: {', '.join(SCOPES)})")
    return Token(name=name, digest=digest.lower(), scopes=scopes,
                 sources=_names(raw.get("sources"), f"{where} sources"),
                 namespaces=_names(raw.get("namespaces"), f"{where} namespaces"))


def _webhook(name: str, raw: Any, where: str) -> WebhookSource:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table with provider and secret")
    _check_keys(raw, {"provider", "secret", "tolerance", "header", "timestamp_header"}, where)
    provider = raw.get("provider")
    if provider not in PROVIDERS:
        raise ConfigError(f"{where} provider: expected one of {', '.join(PROVIDERS)}, got {provider!r}")
    secret = raw.get("secret")
    secrets = tuple(secret) if isinstance(secret, list) else (secret,)
    if not secrets or not all(isinstance(s, str) and s for s in secrets):
        raise ConfigError(f"{where} secret: required (text, or a list of texts during a rotation); "
                          "use \"${ENV_VAR}\" to keep it out of the file")
    kw: dict[str, Any] = {}
    if "tolerance" in raw:
        kw["tolerance"] = parse_seconds(raw["tolerance"], f"{where} tolerance")
    if "header" in raw:
        kw["header"] = str(raw["header"])
    if raw.get("timestamp_header"):
        kw["timestamp_header"] = str(raw["timestamp_header"])
    return WebhookSource(name=name, provider="standard" if provider == "svix" else str(provider), secrets=secrets, **kw)
