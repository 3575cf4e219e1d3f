"""Redaction: URIs are parsed (userinfo ends at the authority's last '@'), secrets are masked in every
spelling, and no part of a password survives in what we print."""

from __future__ import annotations

from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icebergdo.redact import MASK, mask_key, redact_uri, redact_uris, safe_message, scrub, uri_password

EVERY_SPECIAL = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~é€"


@pytest.mark.parametrize(
    "uri, shown, password",
    [
        ("postgresql+psycopg://icebergdo:s3cret@db:5432/icebergdo", "postgresql+psycopg://icebergdo:***@db:5432/icebergdo", "s3cret"),
        ("postgresql://u:p%40ss%2Fw%3Ard@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require", "p@ss/w:rd"),
        ("postgresql://u:@h/db", "postgresql://u:***@h/db", None),  # empty password: nothing to hide, shape kept
        ("postgresql://u@h/db", "postgresql://u@h/db", None),  # no password
        ("postgresql://h:5432/db", "postgresql://h:5432/db", None),  # a port is no password
        ("sqlite:////tmp/lake/catalog.db", "sqlite:////tmp/lake/catalog.db", None),
        ("https://example.com/a@b", "https://example.com/a@b", None),  # '@' in a path, no userinfo
        ("not a uri", "not a uri", None),
        # Written by hand with raw specials: ambiguous, so everything up to the last '@' is masked.
        ("postgresql://u:p@ss/w:rd@h/db", "postgresql://u:***@h/db", "p@ss/w:rd"),
        ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db", "pa/ss"),
        ("postgresql://u:pa?ss#x@h/db", "postgresql://u:***@h/db", "pa?ss#x"),
    ],
)
def test_redact_uri_and_uri_password(uri: str, shown: str, password: str | None) -> None:
    assert redact_uri(uri) == shown
    assert uri_password(uri) == password


def test_every_special_character_encoded_round_trips() -> None:
    uri = f"postgresql+psycopg://icebergdo:{quote(EVERY_SPECIAL, safe='')}@127.0.0.1:5432/icebergdo"
    assert uri_password(uri) == EVERY_SPECIAL
    assert redact_uri(uri) == "postgresql+psycopg://icebergdo:***@127.0.0.1:5432/icebergdo"


@given(st.text(min_size=1, max_size=40).filter(lambda s: "\n" not in s))
def test_no_encoded_password_survives_redaction(password: str) -> None:
    uri = f"postgresql://user:{quote(password, safe='')}@host:5432/db"
    assert uri_password(uri) == password
    assert redact_uri(uri) == "postgresql://user:***@host:5432/db"


@given(st.text(alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), min_size=1, max_size=40))
def test_raw_password_never_shows_after_scrub(password: str) -> None:
    """Even written raw (unencoded) into a URI inside a message, the password is gone once scrubbed."""
    text = f"connection to postgresql://user:{password}@host:5432/db failed ({quote(password, safe='')})"
    out = scrub(text, [password]).replace(MASK, "")
    assert password not in out and quote(password, safe="") not in out


def test_redact_uris_in_free_text() -> None:
    text = "could not reach postgresql://u:pw1@h1/db or mysql://v:pw2@h2/x; see https://docs.example/x"
    assert redact_uris(text) == "could not reach postgresql://u:***@h1/db or mysql://v:***@h2/x; see https://docs.example/x"


def test_scrub_masks_every_spelling_longest_first() -> None:
    secret = "a b/c@d"
    text = f"raw {secret} | full {quote(secret, safe='')} | path {quote(secret)} | form {quote_plus(secret)} | part a b"
    out = scrub(text, [secret, "a b", None, ""])
    assert out == f"raw {MASK} | full {MASK} | path {MASK} | form {MASK} | part {MASK}"


def test_safe_message_uses_driver_message_and_scrubs() -> None:
    class DriverError(Exception):
        pass

    class WrappedError(Exception):
        def __init__(self) -> None:
            super().__init__("[SQL: INSERT ... params ('big secret payload',)]")
            self.orig = DriverError("FATAL:  password   authentication failed\nfor pw hunter2")

    msg = safe_message(WrappedError(), ["hunter2"])
    assert msg == f"WrappedError: FATAL: password authentication failed for pw {MASK}"
    assert len(safe_message(ValueError("x" * 1000), limit=50)) == 50


@pytest.mark.parametrize("key, shown", [(None, None), ("", ""), ("short", MASK), ("AKIAIOSFODNN7EXAMPLE", "AKIA…")])
def test_mask_key(key: str | None, shown: str | None) -> None:
    assert mask_key(key) == shown
