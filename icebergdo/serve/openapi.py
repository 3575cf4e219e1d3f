"""The OpenAPI 3.1 document served at `/openapi.json` (written out, so it says exactly what the routes do)."""

from __future__ import annotations

from typing import Any

from icebergdo.serve.settings import Settings

_ERROR = {"$ref": "#/components/schemas/Error"}
_ACCEPTED = {"$ref": "#/components/schemas/Accepted"}


def _responses(*extra: int, webhook: bool = False) -> dict[str, Any]:
    text = {
        202: "Durable: the events are in the fsynced write-ahead log (committed to Iceberg at the writer's next flush)",
        400: "Malformed body (invalid JSON, bad gzip)",
        401: "Missing or unknown bearer token" if not webhook else "Signature missing, malformed, not matching, or timestamp outside the tolerance",
        403: "The token may not write this source or namespace",
        404: "No such webhook source or collection",
        413: "Body over the limit (as received or decoded)",
        415: "Unsupported Content-Type or Content-Encoding",
        422: "A record does not validate: `index` and `field` name it; nothing was written",
        429: "Pending bound reached (backpressure) or source rate limit: retry after `Retry-After` seconds",
        503: "Not ready (catalog or storage unreachable, commits failing) or shutting down: retry after `Retry-After`",
    }
    codes = [202, 400, 401, 403, 413, 415, 422, 429, 503, *extra]
    out: dict[str, Any] = {}
    for c in sorted(set(codes)):
        schema = _ACCEPTED if c == 202 else _ERROR
        out[str(c)] = {"description": text[c], "content": {"application/json": {"schema": schema}}}
    return out


def _body(schema: dict[str, Any], ndjson: bool = True) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    if ndjson:
        content["application/x-ndjson"] = {"schema": {"type": "string", "description": "one JSON record per line"}}
    return {"required": True, "content": content}


def document(settings: Settings) -> dict[str, Any]:
    idem = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 255},
            "description": "A repeat within the idempotency window gets the first answer back and writes nothing"}
    gzip = {"name": "Content-Encoding", "in": "header", "required": False, "schema": {"enum": ["gzip", "identity"]}}
    security: list[dict[str, list[str]]] = [{"bearer": []}] if settings.auth else []
    ts_schema: dict[str, Any] = {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer", "description": "epoch ms"}]}
    event: dict[str, Any] = {
        "type": "object", "required": ["ts", "type"], "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "description": "assigned (ULID) when absent"},
            "ts": ts_schema,
            "type": {"type": "string"}, "source": {"type": "string"}, "namespace": {"type": "string"},
            "collection": {"type": "string"}, "payload": {"description": "any JSON"},
        },
    }
    rpc: dict[str, Any] = {
        "type": "object", "required": ["method"],
        "properties": {
            "method": {"type": "string"}, "ts": ts_schema, "duration_ms": {"type": "number", "minimum": 0},
            "status": {"oneOf": [{"type": "string"}, {"type": "integer"}]}, "request": {}, "response": {},
            "id": {"type": "string"}, "source": {"type": "string"},
        },
        "additionalProperties": True,
    }
    change: dict[str, Any] = {
        "type": "object", "required": ["op"],
        "properties": {"op": {"enum": ["insert", "update", "delete"]}, "ts": ts_schema,
                       "seq": {"type": "integer"}, "row": {"type": "object"}, "key": {}},
        "additionalProperties": True,
        "description": "flat ({op, ts, seq, <key and row fields>}) or {op, ts, seq, row: {...}} as in `icebergdo cdc apply`",
    }

    def many(item: dict[str, Any]) -> dict[str, Any]:
        return {"oneOf": [item, {"type": "array", "items": item}]}

    paths: dict[str, Any] = {
        "/v1/events": {"post": {
            "summary": "Append events (one, an array, or NDJSON; optionally gzip)", "security": security,
            "parameters": [idem, gzip], "requestBody": _body(many(event)), "responses": _responses(),
        }},
        "/v1/rpc": {"post": {
            "summary": "Append RPC call records as type=rpc events", "security": security,
            "parameters": [idem, gzip], "requestBody": _body(many(rpc)), "responses": _responses(),
        }},
        "/v1/cdc/{namespace}/{collection}": {"post": {
            "summary": "Append change records to a CDC collection (routed when the events are committed)", "security": security,
            "parameters": [{"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "collection", "in": "path", "required": True, "schema": {"type": "string"}}, idem, gzip],
            "requestBody": _body(many(change)), "responses": _responses(404),
        }},
        "/v1/webhooks/{source}": {"post": {
            "summary": "A provider's webhook delivery, verified by signature and stored verbatim as a type=webhook event",
            "security": [],
            "parameters": [{"name": "source", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"*/*": {"schema": {}}}},
            "responses": _responses(404, webhook=True),
        }},
        "/v1/ws": {"get": {
            "summary": "WebSocket: send events (JSON, arrays, NDJSON, or {seq, events}); receive ack/pause/resume/error frames",
            "description": "Each text frame gets a sequence number (its `seq`, or the previous + 1). The server sends "
                           '{"type":"ack","seq":N} once every frame up to N is durable or was refused with an error frame, '
                           '{"type":"pause","retry_after":s} when the writer is full (it stops reading until there is room) '
                           'and {"type":"resume"} after.',
            "security": security, "responses": {"101": {"description": "Switching Protocols"}},
        }},
        "/healthz": {"get": {"summary": "The process is up", "responses": {"200": {"description": "ok"}}}},
        "/readyz": {"get": {"summary": "Ready to take events (catalog, storage, writer)",
                            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready; `checks` says why"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format 0.0.4"}}}},
    }
    if settings.catalog:
        paths["/catalog/v1/config"] = {"get": {"summary": "Iceberg REST catalog (mounted at /catalog; see its own specification)",
                                               "responses": {"200": {"description": "catalog config"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "icebergdo serve", "version": "1",
                 "description": "Events, webhooks, RPC records, CDC changes and WebSocket streams into Apache Iceberg tables, "
                                "acknowledged only once durable in the write-ahead log."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Accepted": {"type": "object", "properties": {"accepted": {"type": "integer"}, "ids": {"type": "array", "items": {"type": "string"}}}},
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}, "index": {"type": "integer"},
                    "field": {"type": "string"}, "retry_after": {"type": "integer"}}}}},
            },
        },
    }
