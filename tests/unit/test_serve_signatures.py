"""Webhook signature schemes against the providers' published examples, plus tampered/expired/missing cases.

Vectors:
- Standard Webhooks (the specification's test vector, also used by Svix's libraries): secret
  whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, id msg_p5jXN8AQM9LWM0D4loKWxJek, timestamp 1614265330,
  body {"test": 2432232314} → v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
- GitHub ("Validating webhook deliveries", testing section): secret "It's a Secret to Everybody",
  body "Hello, World!" → sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17
- Stripe publishes no fixed vector (its libraries sign in their tests); its scheme — HMAC-SHA256 of
  "{t}.{body}" keyed by the whole whsec_ secret, hex in v1= — is checked with a signature computed
  here independently of the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from icebergdo.serve.settings import WebhookSource
from icebergdo.serve.signatures import SignatureError, sign, verify

STD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STD_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STD_TS = 1614265330
STD_BODY = b'{"test": 2432232314}'
STD_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIG = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def std_headers(**over: str) -> dict[str, str]:
    h = {"webhook-id": STD_ID, "webhook-timestamp": str(STD_TS), "webhook-signature": STD_SIG}
    h.update(over)
    return h


def test_standard_webhooks_published_vector() -> None:
    src = WebhookSource("svc", "standard", (STD_SECRET,))
    v = verify(src, std_headers(), STD_BODY, now=STD_TS + 10)
    assert v.event_id == STD_ID and int(v.ts.timestamp()) == STD_TS
    # Svix sends the same scheme under svix-* headers; a secret pasted without its prefix works too.
    svix = {k.replace("webhook-", "svix-"): val for k, val in std_headers().items()}
    assert verify(WebhookSource("svc", "standard", ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",)), svix, STD_BODY, now=STD_TS).event_id == STD_ID
    # several signatures (rotation on the sender's side): one matching is enough
    rotated = std_headers(**{"webhook-signature": "v1,bm90IHRoaXMgb25l " + STD_SIG})
    assert verify(src, rotated, STD_BODY, now=STD_TS).event_id == STD_ID
    # our own signer produces the published signature
    assert sign(src, STD_BODY, now=STD_TS, event_id=STD_ID)["webhook-signature"] == STD_SIG


@pytest.mark.parametrize(
    ("headers", "body", "now", "reason"),
    [
        (std_headers(), b'{"test": 2432232315}', STD_TS, "mismatch"),  # tampered body
        (std_headers(**{"webhook-id": "msg_other"}), STD_BODY, STD_TS, "mismatch"),  # tampered id
        (std_headers(), STD_BODY, STD_TS + 301, "expired"),
        (std_headers(), STD_BODY, STD_TS - 301, "expired"),  # from the future
        ({"webhook-id": STD_ID, "webhook-timestamp": str(STD_TS)}, STD_BODY, STD_TS, "missing"),
        (std_headers(**{"webhook-signature": "v1,not-base64!!"}), STD_BODY, STD_TS, "malformed"),
        (std_headers(**{"webhook-timestamp": "yesterday"}), STD_BODY, STD_TS, "malformed"),
    ],
)
def test_standard_webhooks_refusals(headers: dict[str, str], body: bytes, now: int, reason: str) -> None:
    with pytest.raises(SignatureError) as err:
        verify(WebhookSource("svc", "standard", (STD_SECRET,)), headers, body, now=now)
    assert err.value.reason == reason
    assert STD_SECRET not in str(err.value) and "MfKQ9r8" not in str(err.value)


def test_github_published_vector() -> None:
    src = WebhookSource("gh", "github", (GH_SECRET,))
    v = verify(src, {"x-hub-signature-256": GH_SIG, "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}, GH_BODY, now=0)
    assert v.event_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958" and v.ts is None
    assert sign(src, GH_BODY, now=0)["X-Hub-Signature-256"] == GH_SIG
    for headers, body, reason in [
        ({"x-hub-signature-256": GH_SIG}, b"Hello, World?", "mismatch"),
        ({}, GH_BODY, "missing"),
        ({"x-hub-signature-256": "sha1=757107ea0eb2509fc211221cce984b8a37570b6d"}, GH_BODY, "malformed"),
    ]:
        with pytest.raises(SignatureError) as err:
            verify(src, headers, body, now=0)
        assert err.value.reason == reason
    # a rotated secret: the old one still verifies while both are configured
    assert verify(WebhookSource("gh", "github", ("new-secret", GH_SECRET)), {"x-hub-signature-256": GH_SIG}, GH_BODY, now=0)


def _stripe_header(secret: str, t: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"


def test_stripe_scheme() -> None:
    secret = "whsec_test_secret_for_icebergdo"
    body = json.dumps({"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "object": "event", "created": 1686089970, "type": "invoice.paid"}).encode()
    src = WebhookSource("stripe", "stripe", (secret,))
    t = 1686090000
    v = verify(src, {"stripe-signature": _stripe_header(secret, t, body)}, body, now=t + 5)
    assert v.event_id == "evt_1NG8Du2eZvKYlo2CUI79vXWy"
    assert int(v.ts.timestamp()) == 1686089970  # the event's `created`, not the delivery time
    assert sign(src, body, now=t)["Stripe-Signature"] == _stripe_header(secret, t, body).rsplit(",v0=", 1)[0]
    cases = [
        ({"stripe-signature": _stripe_header(secret, t, body)}, body.replace(b"paid", b"void"), t, "mismatch"),
        ({"stripe-signature": _stripe_header("whsec_other", t, body)}, body, t, "mismatch"),
        ({"stripe-signature": _stripe_header(secret, t, body)}, body, t + 301, "expired"),
        ({}, body, t, "missing"),
        ({"stripe-signature": f"t={t}"}, body, t, "malformed"),
    ]
    for headers, b, now, reason in cases:
        with pytest.raises(SignatureError) as err:
            verify(src, headers, b, now=now)
        assert err.value.reason == reason, (headers, reason)
        assert secret not in str(err.value)


def test_generic_hmac_with_and_without_timestamp() -> None:
    body = b'{"order": 7}'
    plain = WebhookSource("shop", "hmac", ("s3cret",), header="X-Shop-Signature")
    digest = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert verify(plain, {"x-shop-signature": digest}, body, now=0).ts is None
    assert verify(plain, {"x-shop-signature": "sha256=" + digest}, body, now=0).event_id is None
    with pytest.raises(SignatureError, match="does not match"):
        verify(plain, {"x-shop-signature": digest}, body + b" ", now=0)
    stamped = WebhookSource("shop", "hmac", ("s3cret",), tolerance=60, header="X-Sig", timestamp_header="X-Ts")
    h = {"x-sig": hmac.new(b"s3cret", b"1000." + body, hashlib.sha256).hexdigest(), "x-ts": "1000"}
    assert int(verify(stamped, h, body, now=1030).ts.timestamp()) == 1000
    with pytest.raises(SignatureError) as err:
        verify(stamped, h, body, now=1061)
    assert err.value.reason == "expired"
    with pytest.raises(SignatureError) as err:
        verify(stamped, {"x-sig": h["x-sig"]}, body, now=1000)
    assert err.value.reason == "missing"
