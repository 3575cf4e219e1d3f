"""Request bodies: read within the size limit, gunzip, split into JSON records.

The limit applies twice: to the bytes received (a `Content-Length` over it is refused before a
byte is read) and to the decoded bytes of a gzip body (a small bomb cannot inflate past it).
Records are labelled `events[i]` (0-based, the index a client uses) so a validation error names
the record and its field; an NDJSON line also carries its line number.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import AsyncIterator
from typing import Any

from icebergdo.serve.http import HttpError

JSON_TYPES = frozenset({"application/json", "text/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines", "application/jsonlines"})
_INDEX = re.compile(r"\[(\d+)\]")
_FIELD = re.compile(r"field '([^']+)'")


def media_type(content_type: str | None) -> str:
    return (content_type or "application/json").split(";", 1)[0].strip().lower()


async def read_body(chunks: AsyncIterator[bytes], content_length: str | None, limit: int) -> bytes:
    """The whole body, refusing (413) anything over `limit` bytes without reading it all."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise HttpError(400, "bad_request", "Content-Length is not a number") from None
        if declared > limit:
            raise HttpError(413, "too_large", f"request body of {declared} bytes is over the limit of {limit} bytes")
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise HttpError(413, "too_large", f"request body is over the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def decode(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo `Content-Encoding: gzip` (at most `limit` decoded bytes); identity passes through."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("identity", ""):
        return body
    if enc not in ("gzip", "x-gzip"):
        raise HttpError(415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported (use gzip or none)")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise HttpError(400, "bad_gzip", f"body is not valid gzip: {e}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise HttpError(413, "too_large", f"gzip body decodes to more than the limit of {limit} bytes")
    if not inflater.eof:
        raise HttpError(400, "bad_gzip", "gzip body is truncated")
    return out


def records(body: bytes, content_type: str | None, *, what: str = "events") -> tuple[list[Any], list[str]]:
    """JSON (one object or an array) or NDJSON → (records, labels); 400/415 for what cannot be parsed."""
    kind = media_type(content_type)
    if kind in NDJSON_TYPES:
        rows: list[Any] = []
        labels: list[str] = []
        for n, line in enumerate(body.split(b"\n"), 1):
            if not line.strip():
                continue
            label = f"{what}[{len(rows)}] (line {n})"
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise bad_json(label, e) from None
            labels.append(label)
        return rows, labels
    if kind not in JSON_TYPES:
        raise HttpError(415, "unsupported_media_type",
                        f"Content-Type {kind!r} is not supported (use application/json or application/x-ndjson)")
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise bad_json("body", e) from None
    rows = doc if isinstance(doc, list) else [doc]
    return rows, [f"{what}[{i}]" for i in range(len(rows))]


def bad_json(label: str, e: ValueError) -> HttpError:
    msg = f"{e.msg} at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
    return HttpError(400, "bad_json", f"{label}: invalid JSON ({msg})")


def invalid(message: str, *, status: int = 422, code: str = "invalid") -> HttpError:
    """A validation error whose message names `events[i]` and `field 'x'`: both go in the body too."""
    m, f = _INDEX.search(message), _FIELD.search(message)
    return HttpError(status, code, message, index=int(m.group(1)) if m else None, field=f.group(1) if f else None)
