"""Webhook signature verification: Stripe, GitHub, Standard Webhooks (Svix) and generic HMAC-SHA256.

Pure functions of (settings, headers, raw body, now): no I/O, so each scheme is unit-tested against
the provider's documented examples. The rules every scheme follows:

- the signature is computed over the exact bytes received (never a re-serialised body);
- digests are compared with `hmac.compare_digest` (constant time), against every configured
  secret (rotation) and every signature the header carries;
- a timestamped scheme (Stripe, Standard Webhooks, hmac with `timestamp_header`) is refused when
  the timestamp is further than `tolerance` seconds from now, either way (replay protection);
- any failure raises `SignatureError` with a reason that names the header, never a secret or the
  expected digest. The caller answers 401 and stores nothing.

What a verified delivery yields: the provider's event id (Stripe: the body's `id`; GitHub:
`X-GitHub-Delivery`; Standard Webhooks: `webhook-id`) and its time (Stripe: the body's `created`,
else the signature's `t`; Standard Webhooks: `webhook-timestamp`; hmac: the timestamp header).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from icebergdo.serve.settings import WebhookSource


class SignatureError(Exception):
    """The delivery could not be verified; `reason` is safe to return and to count (no secrets)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # missing | malformed | mismatch | expired


@dataclass(frozen=True)
class Verified:
    event_id: str | None
    ts: datetime | None


def _hmac(key: bytes, content: bytes) -> bytes:
    return hmac.new(key, content, hashlib.sha256).digest()


def _any_match(expected: list[bytes], given: list[bytes]) -> bool:
    ok = False
    for e in expected:
        for g in given:
            ok |= hmac.compare_digest(e, g)  # no early exit: every pair is compared
    return ok


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name.lower())
    return value.strip() if value is not None and value.strip() else None


def _check_time(ts: int, now: float, tolerance: float, header: str) -> None:
    if abs(now - ts) > tolerance:
        raise SignatureError("expired", f"{header}: timestamp {ts} is more than {tolerance:g}s from the server's clock")


def _epoch(text: str, header: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SignatureError("malformed", f"{header}: timestamp {text[:40]!r} is not epoch seconds") from None


def verify(source: WebhookSource, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
    """Verify one delivery for `source` (headers with lower-case names); raises `SignatureError`."""
    if source.provider == "stripe":
        return _stripe(source, headers, body, now)
    if source.provider == "github":
        return _github(source, headers, body)
    if source.provider == "standard":
        return _standard(source, headers, body, now)
    return _generic(source, headers, body, now)


def _stripe(source: WebhookSource, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
    """`Stripe-Signature: t=<epoch>,v1=<hex>[,v1=...]`: HMAC-SHA256 of "{t}.{body}" with the `whsec_…` secret as is."""
    value = _header(headers, "Stripe-Signature")
    if value is None:
        raise SignatureError("missing", "Stripe-Signature header is missing")
    t: str | None = None
    sigs: list[bytes] = []
    for part in value.split(","):
        k, _, v = part.strip().partition("=")
        if k == "t":
            t = v
        elif k == "v1":
            try:
                sigs.append(bytes.fromhex(v))
            except ValueError:
                continue  # a malformed entry never matches
    if t is None or not sigs:
        raise SignatureError("malformed", "Stripe-Signature: expected t=<timestamp> and at least one v1=<signature>")
    ts = _epoch(t, "Stripe-Signature")
    content = t.encode() + b"." + body
    if not _any_match([_hmac(s.encode(), content) for s in source.secrets], sigs):
        raise SignatureError("mismatch", "Stripe-Signature: no v1 signature matches the body")
    _check_time(ts, now, source.tolerance, "Stripe-Signature")
    event_id, created = None, None
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        event_id = doc.get("id") if isinstance(doc.get("id"), str) else None
        created = doc.get("created") if isinstance(doc.get("created"), int) and not isinstance(doc.get("created"), bool) else None
    return Verified(event_id, datetime.fromtimestamp(created if created is not None else ts, UTC))


def _github(source: WebhookSource, headers: Mapping[str, str], body: bytes) -> Verified:
    """`X-Hub-Signature-256: sha256=<hex>`: HMAC-SHA256 of the body. GitHub signs no timestamp."""
    value = _header(headers, "X-Hub-Signature-256")
    if value is None:
        raise SignatureError("missing", "X-Hub-Signature-256 header is missing")
    algo, _, hexdigest = value.partition("=")
    try:
        given = bytes.fromhex(hexdigest)
    except ValueError:
        given = b""
    if algo != "sha256" or len(given) != 32:
        raise SignatureError("malformed", "X-Hub-Signature-256: expected sha256=<64 hex digits>")
    if not _any_match([_hmac(s.encode(), body) for s in source.secrets], [given]):
        raise SignatureError("mismatch", "X-Hub-Signature-256 does not match the body")
    return Verified(_header(headers, "X-GitHub-Delivery"), None)


def standard_key(secret: str) -> bytes:
    """A Standard Webhooks secret is `whsec_` + base64 of the key bytes (the prefix is optional)."""
    text = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return secret.encode()  # not base64: use the text itself, as some senders do


def _standard(source: WebhookSource, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
    """Standard Webhooks / Svix: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> ...`
    (or the same with `svix-` headers); HMAC-SHA256 of "{id}.{timestamp}.{body}"."""
    prefix = "webhook" if _header(headers, "webhook-signature") is not None else "svix"
    msg_id, stamp, value = (_header(headers, f"{prefix}-{h}") for h in ("id", "timestamp", "signature"))
    if value is None:
        raise SignatureError("missing", "webhook-signature header is missing")
    if msg_id is None or stamp is None:
        raise SignatureError("malformed", f"{prefix}-id and {prefix}-timestamp headers are required with {prefix}-signature")
    sigs: list[bytes] = []
    for entry in value.split():
        version, _, sig = entry.partition(",")
        if version == "v1":
            try:
                sigs.append(base64.b64decode(sig, validate=True))
            except (binascii.Error, ValueError):
                continue
    if not sigs:
        raise SignatureError("malformed", f"{prefix}-signature: expected v1,<base64 signature>")
    ts = _epoch(stamp, f"{prefix}-timestamp")
    content = f"{msg_id}.{stamp}.".encode() + body
    if not _any_match([_hmac(standard_key(s), content) for s in source.secrets], sigs):
        raise SignatureError("mismatch", f"{prefix}-signature: no v1 signature matches the body")
    _check_time(ts, now, source.tolerance, f"{prefix}-timestamp")
    return Verified(msg_id, datetime.fromtimestamp(ts, UTC))


def _generic(source: WebhookSource, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
    """HMAC-SHA256 of the body (or "{timestamp}.{body}" with `timestamp_header`), hex, optionally `sha256=`-prefixed."""
    value = _header(headers, source.header)
    if value is None:
        raise SignatureError("missing", f"{source.header} header is missing")
    try:
        given = bytes.fromhex(value.removeprefix("sha256="))
    except ValueError:
        given = b""
    if len(given) != 32:
        raise SignatureError("malformed", f"{source.header}: expected 64 hex digits (optionally prefixed sha256=)")
    content, ts = body, None
    if source.timestamp_header:
        stamp = _header(headers, source.timestamp_header)
        if stamp is None:
            raise SignatureError("missing", f"{source.timestamp_header} header is missing")
        ts = _epoch(stamp, source.timestamp_header)
        content = stamp.encode() + b"." + body
    if not _any_match([_hmac(s.encode(), content) for s in source.secrets], [given]):
        raise SignatureError("mismatch", f"{source.header} does not match the body")
    if ts is not None:
        _check_time(ts, now, source.tolerance, str(source.timestamp_header))
    return Verified(None, datetime.fromtimestamp(ts, UTC) if ts is not None else None)


def sign(source: WebhookSource, body: bytes, *, now: int, event_id: str = "msg_test") -> dict[str, str]:
    """The headers a sender would add (first secret): for tests and for `curl` examples in the docs."""
    secret = source.secrets[0]
    if source.provider == "stripe":
        return {"Stripe-Signature": f"t={now},v1={_hmac(secret.encode(), f'{now}.'.encode() + body).hex()}"}
    if source.provider == "github":
        return {"X-Hub-Signature-256": "sha256=" + _hmac(secret.encode(), body).hex(), "X-GitHub-Delivery": event_id}
    if source.provider == "standard":
        sig = base64.b64encode(_hmac(standard_key(secret), f"{event_id}.{now}.".encode() + body)).decode()
        return {"webhook-id": event_id, "webhook-timestamp": str(now), "webhook-signature": f"v1,{sig}"}
    if source.timestamp_header:
        return {source.header: _hmac(secret.encode(), f"{now}.".encode() + body).hex(), source.timestamp_header: str(now)}
    return {source.header: _hmac(secret.encode(), body).hex()}
