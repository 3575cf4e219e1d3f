"""REST catalog auth and settings, without a server: tokens by hash, issued tokens, scopes, config errors."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from icebergdo.errors import ConfigError
from icebergdo.restcatalog.auth import Authenticator, AuthError
from icebergdo.restcatalog.settings import ClientSpec, RestServeSettings, TokenSpec, new_token, token_hash


def settings(**kw: object) -> RestServeSettings:
    write, read, secret = "w-" + "a" * 40, "r-" + "b" * 40, "s-" + "c" * 40
    base = RestServeSettings(
        enabled=True,
        tokens=(TokenSpec("writer", token_hash(write), "write"), TokenSpec("reader", token_hash(read), "read")),
        clients=(ClientSpec("engine", token_hash(secret), "write"),),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_static_tokens_by_hash_with_their_scope() -> None:
    auth = Authenticator(settings())
    assert auth.principal("Bearer w-" + "a" * 40).scope == "write"
    assert auth.principal("bearer r-" + "b" * 40).scope == "read"
    for header in (None, "", "Bearer", "Basic abc", "Bearer w-" + "a" * 39):
        with pytest.raises(AuthError):
            auth.principal(header)


def test_anonymous_scope_only_when_configured() -> None:
    assert Authenticator(settings(anonymous="read")).principal(None).scope == "read"
    with pytest.raises(AuthError):
        Authenticator(settings()).principal(None)


def test_client_credentials_issue_signed_expiring_tokens() -> None:
    s = settings(token_ttl=60)
    auth = Authenticator(s)
    issued = auth.client_credentials("engine", "s-" + "c" * 40, "catalog")
    assert issued["token_type"] == "bearer" and issued["expires_in"] == 60 and issued["scope"] == "write"
    token = str(issued["access_token"])
    assert auth.principal(f"Bearer {token}").name == "engine"
    # Narrowed on request; never widened.
    assert auth.client_credentials("engine", "s-" + "c" * 40, "read")["scope"] == "read"
    # Tampered, foreign-key-signed or wrong secret: refused.
    head, payload, sig = token.split(".")
    assert auth.verify(f"{head}.{payload}x.{sig}") is None
    assert Authenticator(replace(s, signing_key=b"k" * 32)).verify(token) is None
    with pytest.raises(AuthError) as e:
        auth.client_credentials("engine", "wrong", None)
    assert e.value.oauth_error == "invalid_client"
    with pytest.raises(AuthError):
        auth.client_credentials("nobody", "s-" + "c" * 40, None)


def test_issued_tokens_expire_and_exchange_keeps_or_narrows_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Authenticator(settings(token_ttl=60))
    token = str(auth.client_credentials("engine", "s-" + "c" * 40, None)["access_token"])
    fresh = auth.exchange(token, None)
    assert auth.verify(str(fresh["access_token"])).scope == "write"  # type: ignore[union-attr]
    assert auth.exchange(token, "read")["scope"] == "read"
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 61)  # the clock, not a component: the token's expiry
    assert auth.verify(token) is None
    with pytest.raises(AuthError):
        auth.exchange(token, None)


def test_settings_from_mapping_and_errors() -> None:
    token = new_token()
    s = RestServeSettings.from_mapping({
        "enabled": True, "anonymous": "read", "token_ttl": 120, "uri": "http://h:1/catalog/",
        "tokens": [{"name": "t", "sha256": token_hash(token).upper(), "scope": "write"}],
        "clients": [{"client_id": "c", "secret_sha256": token_hash("x")}],
        "client_config": {"s3.endpoint": "https://s3.example"},
    })
    assert s.tokens[0].sha256 == token_hash(token) and s.clients[0].scope == "read" and s.anonymous == "read"
    assert s.uri == "http://h:1/catalog" and s.client_config == {"s3.endpoint": "https://s3.example"}
    assert token not in repr(s) and token_hash(token) not in repr(s)
    for bad, message in [
        ({"tokens": [{"sha256": "abc"}]}, "64-hex-digit"),
        ({"tokens": [{"sha256": token_hash("x"), "scope": "admin"}]}, "scope"),
        ({"clients": [{"secret_sha256": token_hash("x")}]}, "client_id"),
        ({"clients": [{"client_id": "a", "secret_sha256": token_hash("x")}] * 2}, "twice"),
        ({"anonymous": "all"}, "anonymous"),
        ({"token_ttl": 5}, "token_ttl"),
        ({"tokenz": []}, "unknown keys"),
    ]:
        with pytest.raises(ConfigError, match=message):
            RestServeSettings.from_mapping(bad)


def test_ingest_service_settings_are_accepted() -> None:
    """`icebergdo serve` hands its own Settings: catalog_options, tokens with the "catalog" scope, auth."""
    from icebergdo.config import Config

    class Token:
        def __init__(self, name: str, digest: str, scopes: frozenset[str]) -> None:
            self.name, self.digest, self.scopes = name, digest, scopes

    class ServeSettings:
        catalog_options = {"anonymous": "read"}
        tokens = (Token("ingest-only", token_hash("i"), frozenset({"ingest"})), Token("both", token_hash("b"), frozenset({"ingest", "catalog"})))
        auth = True

    config = Config.from_dict({"catalog": {"uri": "sqlite:////tmp/x.db", "warehouse": "file:///tmp/wh"}})
    s = RestServeSettings.coerce(ServeSettings(), config)
    assert [t.name for t in s.tokens] == ["both"] and s.tokens[0].scope == "write" and s.anonymous == "read"
    ServeSettings.auth, ServeSettings.catalog_options = False, {}
    assert RestServeSettings.coerce(ServeSettings(), config).anonymous == "write"
