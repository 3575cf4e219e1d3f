"""Keeping secrets out of everything we print, log or raise: the one place that knows how.

Three kinds of secret reach text: S3 secret keys and session tokens (from `[s3]`), database
passwords (inside a catalog URI's userinfo), and access key ids (not secret, but shown masked).
Every message that may contain a foreign error text (a driver's, boto's, pyarrow's) goes through
`safe_message` or `scrub` with the config's `secrets()`; URIs are shown through `redact_uri`.

URIs are parsed, not pattern-matched: the authority runs from `://` to the first `/`, `?` or `#`
and its userinfo ends at the authority's last `@` (RFC 3986, 3.2). Interpolated passwords are
percent-encoded (`icebergdo.config`), so that parse is exact. A URI written by hand with a raw
`@`, `/`, `?` or `#` in its password is ambiguous (an `@` after the authority); then everything
from the user name to the last `@` is masked: too much is hidden, never part of a password.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# A URI inside free text: a scheme, `://`, and the run of non-space characters after it.
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


@dataclass(frozen=True)
class _Userinfo:
    """A URI cut around its password: `head` + password + `tail` == the URI."""

    head: str  # scheme://user:
    password: str  # as written (percent-encoded, or raw when the URI is ambiguous)
    tail: str  # @host…


def _userinfo(uri: str) -> _Userinfo | None:
    """The password part of `scheme://user:password@host…`, or None when there is none."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return None
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:end]
    at = authority.rfind("@")
    if "@" in rest[end:]:
        at = rest.rfind("@")  # ambiguous: a raw '/', '?', '#' or '@' in the password; mask up to the last '@'
    if at < 0:
        return None
    user, colon, password = rest[:at].partition(":")
    if not colon:
        return None
    return _Userinfo(f"{scheme}://{user}:", password, rest[at:])


def mask_key(value: str | None) -> str | None:
    """An access key id for display: its first 4 characters when it is long, else nothing of it."""
    if not value:
        return value
    return value[:4] + "…" if len(value) > 8 else MASK


def uri_password(uri: str) -> str | None:
    """The (percent-decoded) password of a URI's userinfo, or None."""
    info = _userinfo(uri)
    return unquote(info.password) if info and info.password else None


def redact_uri(uri: str) -> str:
    """One URI for display: its password (if any) replaced by ***; user, host, port and path kept."""
    info = _userinfo(uri)
    return f"{info.head}{MASK}{info.tail}" if info else uri


def redact_uris(text: str) -> str:
    """Every `scheme://user:password@…` inside free text with its password replaced by ***."""
    return _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)


def secret_forms(secret: str) -> set[str]:
    """The spellings a secret can take in text: as is, and percent-encoded (fully, keeping `/`, form-style)."""
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret, safe="")}


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every secret (also in its percent-encoded forms) and every URI password masked."""
    forms = {form for s in secrets if s for form in secret_forms(s)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return redact_uris(text)


def safe_message(exc: BaseException, secrets: Iterable[str | None] = (), limit: int = 500) -> str:
    """One line describing `exc`, with secrets and URI passwords removed.

    SQLAlchemy errors carry the SQL and its parameters; their `orig` (the driver's own message) is used instead.
    """
    orig = getattr(exc, "orig", None)
    text = f"{type(exc).__name__}: {orig if orig is not None else exc}"
    return scrub(" ".join(text.split()), secrets)[:limit]
