"""The one shape of an error response, and the exception that carries it out of a handler.

Every refusal is JSON: `{"error": {"code", "message", "index"?, "field"?}}` with the HTTP status;
429 and 503 carry `Retry-After`. `HttpError` is a response, not a program failure, so it does not
derive from `icebergdo.errors.IcebergdoError` (those end the CLI with an exit code).
"""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import JSONResponse


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, *, retry_after: float | None = None,
                 index: int | None = None, field: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after, self.index, self.field = retry_after, index, field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.index is not None:
            err["index"] = self.index
        if self.field is not None:
            err["field"] = self.field
        if self.retry_after is not None:
            err["retry_after"] = retry_after_header(self.retry_after)
        return {"error": err}

    def response(self) -> JSONResponse:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(retry_after_header(self.retry_after))
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def retry_after_header(seconds: float) -> int:
    """`Retry-After` takes whole seconds: round up, at least 1."""
    return max(1, math.ceil(seconds))
