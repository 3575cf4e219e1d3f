"""Keeping secrets out of everything we print, log or raise: the one place that knows how.

Three kinds of secret reach text: S3 secret keys and session tokens (from `[s3]`), database
passwords (inside a catalog URI's userinfo), and access key ids (not secret, but shown masked).
Every message that may contain a foreign error text (a driver's, boto's, pyarrow's) goes through
`safe_message` or `scrub` with the config's `secrets()`; URIs are shown through `redact_uri`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
# scheme://user:password@host — the password runs to the last '@' of the (space-free) run, so an
# unencoded '@' inside it is still covered.
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>\S*)@")


def mask_key(value: str | None) -> str | None:
    """An access key id for display: its first 4 characters when it is long, else nothing of it."""
    if not value:
        return value
    return value[:4] + "…" if len(value) > 8 else MASK


def uri_password(uri: str) -> str | None:
    """The (decoded) password of a URI's userinfo, or None."""
    try:
        parts = urlsplit(uri)
        if parts.password is not None:
            return unquote(parts.password)
    except ValueError:
        pass
    m = _URI_PASSWORD.search(uri)
    return unquote(m.group("password")) if m and m.group("password") else None


def redact_uri(text: str) -> str:
    """Every `scheme://user:password@` in `text` with the password replaced by ***."""
    return _URI_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every secret (also in its percent-encoded form) and every URI password masked."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, MASK)
    return redact_uri(text)


def safe_message(exc: BaseException, secrets: Iterable[str | None] = (), limit: int = 500) -> str:
    """One line describing `exc`, with secrets and URI passwords removed.

    SQLAlchemy errors carry the SQL and its parameters; their `orig` (the driver's own message) is used instead.
    """
    orig = getattr(exc, "orig", None)
    text = f"{type(exc).__name__}: {orig if orig is not None else exc}"
    return scrub(" ".join(text.split()), secrets)[:limit]
