"""Who is calling, and may they: bearer tokens, OAuth2 client credentials, read vs write scopes.

Three ways in, all ending in a `Principal` with a scope:

- a static bearer token from `[[serve.catalog.tokens]]` (compared by SHA-256, constant time);
- an access token this server issued at `POST /v1/oauth/tokens` for client credentials from
  `[[serve.catalog.clients]]` (DuckDB's CLIENT_ID/CLIENT_SECRET, pyiceberg's and Spark's
  `credential`), or in a token exchange for a still-valid one of ours (how Java clients refresh);
- no credentials at all, when `anonymous` grants a scope.

Issued tokens are stateless: `iat1.<payload>.<HMAC-SHA256>`, the payload naming the client, the
scope and the expiry, signed with a key that lives only in this process. A restart invalidates
them; clients then get 401 and ask for a new one, which every client above does by itself.
Nothing here logs or echoes a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from icebergdo.restcatalog.settings import RestServeSettings, Scope, hash_matches

_PREFIX = "iat1"
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Principal:
    name: str
    scope: Scope

    def may_write(self) -> bool:
        return self.scope == "write"


class AuthError(Exception):
    """401: no or bad credentials (`oauth` → the OAuth2 error body of the token endpoint)."""

    def __init__(self, message: str, *, oauth_error: str | None = None) -> None:
        super().__init__(message)
        self.oauth_error = oauth_error


class Authenticator:
    def __init__(self, settings: RestServeSettings) -> None:
        self.settings = settings

    # -- requests ------------------------------------------------------------------------------
    def principal(self, authorization: str | None) -> Principal:
        """The caller of a request with this Authorization header; AuthError when it is not acceptable."""
        if not authorization:
            if self.settings.anonymous is not None:
                return Principal("anonymous", self.settings.anonymous)
            raise AuthError("credentials are required: send 'Authorization: Bearer <token>'")
        kind, _, token = authorization.partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            raise AuthError("unsupported Authorization header: expected 'Bearer <token>'")
        found = self.verify(token)
        if found is None:
            raise AuthError("the bearer token is not valid (unknown, or expired)")
        return found

    def verify(self, token: str) -> Principal | None:
        if token.startswith(_PREFIX + "."):
            return self._verify_issued(token)
        for spec in self.settings.tokens:
            if hash_matches(token, spec.sha256):
                return Principal(spec.name, spec.scope)
        return None

    # -- the token endpoint --------------------------------------------------------------------
    def client_credentials(self, client_id: str, client_secret: str, requested: str | None) -> dict[str, object]:
        for client in self.settings.clients:
            if hmac.compare_digest(client.client_id, client_id) and hash_matches(client_secret, client.secret_sha256):
                return self._issue(client.client_id, _narrow(client.scope, requested))
        raise AuthError("unknown client or wrong secret", oauth_error="invalid_client")

    def exchange(self, subject_token: str, requested: str | None) -> dict[str, object]:
        """Token exchange (RFC 8693) as Iceberg clients use it: a fresh token for a valid one, same or narrower scope."""
        found = self.verify(subject_token)
        if found is None:
            raise AuthError("subject_token is not valid (unknown, or expired)", oauth_error="invalid_grant")
        return self._issue(found.name, _narrow(found.scope, requested))

    def _issue(self, name: str, scope: Scope) -> dict[str, object]:
        ttl = self.settings.token_ttl
        payload = _b64(json.dumps({"sub": name, "scope": scope, "exp": int(time.time()) + ttl}, separators=(",", ":")).encode())
        token = f"{_PREFIX}.{payload}.{self._sign(payload)}"
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": ttl,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "scope": scope,
        }

    def _verify_issued(self, token: str) -> Principal | None:
        try:
            _, payload, signature = token.split(".")
        except ValueError:
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            claims = json.loads(_unb64(payload))
        except ValueError:
            return None
        if not isinstance(claims, dict) or claims.get("exp", 0) < time.time() or claims.get("scope") not in ("read", "write"):
            return None
        return Principal(str(claims.get("sub")), claims["scope"])

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.settings.signing_key, payload.encode(), hashlib.sha256).digest())


def _narrow(granted: Scope, requested: str | None) -> Scope:
    """The scope to issue: what the client may have, narrowed to read when it asked for read only.

    Clients send scopes of their own (`catalog` from pyiceberg and Spark, `PRINCIPAL_ROLE:ALL`
    from others); anything that does not name "read" alone gets the client's configured scope.
    """
    words = set((requested or "").replace(",", " ").split())
    if granted == "write" and words and words <= {"read", "catalog:read"}:
        return "read"
    return granted


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
