"""Exceptions → the REST spec's error model: `{"error": {"message", "type", "code"}}`, one status per meaning.

Clients key their behaviour on the status (pyiceberg: 404 → NoSuchTableError, 409 on a commit →
CommitFailedException and a retry, 500/502/504 on a commit → CommitStateUnknownException), and
show `type: message` to the user. Messages are scrubbed of every secret the config holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pydantic import ValidationError
from pyiceberg import exceptions as ice
from starlette.responses import JSONResponse

from icebergdo import errors as ours
from icebergdo.redact import safe_message, scrub
from icebergdo.restcatalog.auth import AuthError

log = logging.getLogger(__name__)


class RestError(Exception):
    """An error with its status and spec type, raised by the handlers themselves."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


# (exception class, status, spec error type); first match wins, so subclasses come first.
_MAP: list[tuple[type[BaseException], int, str]] = [
    (ice.NoSuchTableError, 404, "NoSuchTableException"),
    (ours.NoSuchTableError, 404, "NoSuchTableException"),
    (ice.NoSuchNamespaceError, 404, "NoSuchNamespaceException"),
    (ice.NoSuchViewError, 404, "NoSuchViewException"),
    (ice.TableAlreadyExistsError, 409, "AlreadyExistsException"),
    (ice.NamespaceAlreadyExistsError, 409, "AlreadyExistsException"),
    (ice.NamespaceNotEmptyError, 409, "NamespaceNotEmptyException"),
    (ice.CommitFailedException, 409, "CommitFailedException"),
    (ice.CommitStateUnknownException, 500, "CommitStateUnknownException"),
    (ours.BadInputError, 400, "BadRequestException"),
    (ours.ConfigError, 400, "BadRequestException"),
    (ValidationError, 400, "BadRequestException"),
    (ice.ValidationError, 400, "BadRequestException"),
    (ice.ValidationException, 409, "CommitFailedException"),
    (NotImplementedError, 406, "UnsupportedOperationException"),
    # the object store or the catalog database is unreachable: the spec's "try again later"
    (ours.StorageError, 503, "ServiceUnavailableException"),
    (ValueError, 400, "BadRequestException"),
    (KeyError, 400, "BadRequestException"),
]


def error_body(status: int, kind: str, message: str) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "code": status}}


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="icebergdo"'} if status == 401 else None
    return JSONResponse(error_body(status, kind, message), status_code=status, headers=headers)


def to_response(exc: BaseException, secrets: Iterable[str], *, commit: bool = False) -> JSONResponse:
    """The spec's error response for `exc`. During a commit an unexpected failure means "state unknown"."""
    if isinstance(exc, RestError):
        return error_response(exc.status, exc.kind, scrub(str(exc), secrets))
    if isinstance(exc, AuthError):
        return error_response(401, "NotAuthorizedException", str(exc))
    for cls, status, kind in _MAP:
        if isinstance(exc, cls):
            message = _first_line(exc) if isinstance(exc, ValidationError) else str(exc)
            return error_response(status, kind, scrub(message, secrets)[:2000])
    message = safe_message(exc, secrets)
    if isinstance(exc, OSError) and not commit:  # pyarrow's S3 errors: storage, not a bug of ours
        log.warning("REST catalog: storage unavailable: %s", message)
        return error_response(503, "ServiceUnavailableException", message)
    log.error("REST catalog: unexpected %s", message, exc_info=log.isEnabledFor(logging.DEBUG))
    if commit:
        return error_response(500, "CommitStateUnknownException", message)
    return error_response(500, "InternalServerError", message)


def _first_line(exc: ValidationError) -> str:
    errs = exc.errors()
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errs[:5]]
    return f"invalid request body: {'; '.join(parts)}"
