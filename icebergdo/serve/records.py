"""What each route accepts, turned into `events.raw` rows (Arrow), validated before anything is written.

- `/v1/events`: events exactly as `append_events` takes them (`icebergdo.schema.events_from_rows`).
- `/v1/rpc`: RPC call records → `type = "rpc"` events; the record (method, duration, status,
  request/response summaries, anything else) is the payload.
- `/v1/cdc/{namespace}/{collection}`: change records as `icebergdo cdc apply` takes them, checked
  against the collection's key and column types, → `cdc.{op}` events, which the writer's commit
  routes to the collection (`icebergdo.cdc.routing`). Their ids come from `cdc.changes.new_ids`,
  increasing in arrival order, so equal `(ts, seq)` versions fold in arrival order.
- `/v1/webhooks/{source}`: the verified raw body → one `type = "webhook"` event.

A token limited to some sources/namespaces is enforced here, per record (`precheck`): one record
outside them refuses the whole request (403) and names it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from ulid import ULID

from icebergdo import layout
from icebergdo.cdc import P_KEY
from icebergdo.cdc.changes import RESERVED, build_batch, new_ids, parse_changes
from icebergdo.cdc.design import DEFAULT_KEY, LOG_SUFFIX, arrow_schema
from icebergdo.errors import BadInputError, IcebergdoError
from icebergdo.schema import EVENT_ARROW_SCHEMA, TS, events_from_rows
from icebergdo.serve.bodies import invalid
from icebergdo.serve.http import HttpError
from icebergdo.serve.settings import Token
from icebergdo.tables import Tables

RPC_FIELDS = ("method", "duration_ms", "status", "request", "response")
_EVENT_KEYS = frozenset({"id", "ts", "source", "namespace", "collection"})


def events(rows: list[Any], labels: Sequence[str], token: Token | None) -> pa.Table:
    """`/v1/events` records validated into events.raw rows right away (422 naming `events[i]` and the field)."""
    rows = precheck(rows, labels, token)
    try:
        return events_from_rows(rows, labels=labels)
    except BadInputError as e:
        raise invalid(str(e)) from None


def precheck(rows: list[Any], labels: Sequence[str], token: Token | None) -> list[Any]:
    """What the token decides, on the parsed records: its one source filled in where none is given, and 403
    naming the first record whose `source` or `namespace` it may not write. The rest of the validation
    (`events_from_rows`) happens when the records are written, for a whole group of requests at once."""
    if token is None:
        return rows
    only = token.only_source
    out = rows
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            continue  # refused by validation, naming it
        if only is not None and row.get("source") is None:
            if out is rows:
                out = list(rows)
            row = out[i] = {**row, "source": only}
        source, namespace = row.get("source"), row.get("namespace")
        if token.sources is not None and not (isinstance(source, str) and source in token.sources):
            raise _forbidden(token, labels[i], i, "source", source, token.sources)
        if token.namespaces is not None and namespace is not None and namespace not in token.namespaces:
            raise _forbidden(token, labels[i], i, "namespace", namespace, token.namespaces)
    return out


def _forbidden(token: Token, label: str, i: int, column: str, value: Any, allowed: frozenset[str]) -> HttpError:
    return HttpError(403, "forbidden", f"{label}: token {token.name!r} may not write {column} {value!r} "
                     f"(allowed: {', '.join(sorted(allowed))})", index=i, field=column)


def sources(rows: list[Any]) -> dict[str | None, int]:
    """Events per `source` (for rate limits); records that are not objects count under None."""
    out: dict[str | None, int] = {}
    for row in rows:
        src = row.get("source") if isinstance(row, Mapping) else None
        key = src if isinstance(src, str) else None
        out[key] = out.get(key, 0) + 1
    return out


def rpc(rows: list[Any], labels: Sequence[str]) -> list[dict[str, Any]]:
    """`/v1/rpc`: `{"method", "ts"?, "duration_ms"?, "status"?, "request"?, "response"?, "id"?, "source"?, ...}` → event records."""
    out: list[dict[str, Any]] = []
    for row, label in zip(rows, labels, strict=True):
        if not isinstance(row, Mapping):
            raise invalid(f"{label}: expected a JSON object, got {type(row).__name__}")
        method = row.get("method")
        if not isinstance(method, str) or not method:
            raise invalid(f"{label}: field 'method' is required (text)")
        duration = row.get("duration_ms")
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0):
            raise invalid(f"{label}: field 'duration_ms' must be a number >= 0, got {duration!r}")
        status = row.get("status")
        if status is not None and (isinstance(status, bool) or not isinstance(status, (int, str))):
            raise invalid(f"{label}: field 'status' must be text or an integer, got {status!r}")
        event = {k: row[k] for k in _EVENT_KEYS if row.get(k) is not None}
        event.setdefault("ts", datetime.now(UTC))
        event["type"] = "rpc"
        event["payload"] = {k: v for k, v in row.items() if k not in _EVENT_KEYS}
        out.append(event)
    return out


class CollectionShapes:
    """Key and column types of CDC collections, cached for `ttl` seconds (one catalog read per collection per ttl)."""

    def __init__(self, tables: Tables, ttl: float = 30.0) -> None:
        self.tables = tables
        self.ttl = ttl
        self._cache: dict[str, tuple[float, list[str], dict[str, pa.DataType]]] = {}

    def get(self, namespace: str, name: str) -> tuple[list[str], dict[str, pa.DataType]]:
        """(key, known column types); a collection that does not exist yet has key ["id"] and no types."""
        ident = f"{namespace}.{name}"
        hit = self._cache.get(ident)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1], hit[2]
        key, known = list(DEFAULT_KEY), {}
        for table in (self.tables.find_table(ident), self.tables.find_table(ident + LOG_SUFFIX)):
            if table is None:
                continue
            if P_KEY not in table.properties:
                raise HttpError(409, "not_a_collection", f"table {ident} exists but is not a CDC collection")
            key = json.loads(table.properties[P_KEY])
            for f in arrow_schema(table.schema()):
                if f.name not in RESERVED:
                    known[f.name] = f.type
        self._cache[ident] = (time.monotonic(), key, known)
        return key, known


def cdc(namespace: str, name: str, rows: list[Any], labels: Sequence[str], token: Token | None, shapes: CollectionShapes) -> pa.Table:
    """`/v1/cdc/{namespace}/{collection}`: change records → `cdc.{op}` events (422 naming `changes[i]`)."""
    try:
        layout.check_collection_namespace(namespace)
        layout.validate_name(name, "collection")
    except IcebergdoError as e:
        raise HttpError(404, "bad_collection", str(e)) from None
    if name.endswith(LOG_SUFFIX):
        raise HttpError(404, "bad_collection", f"{namespace}/{name} cannot be a collection (names ending in {LOG_SUFFIX} are change logs)")
    if token is not None and not token.allows_namespace(namespace):
        raise HttpError(403, "forbidden", f"token {token.name!r} may not write namespace {namespace!r}", field="namespace")
    key, known = shapes.get(namespace, name)
    try:
        changes = parse_changes(rows, key, labels=labels)
        if changes:
            build_batch(changes, key, known)  # every value fits the collection's columns (nothing is written here)
    except BadInputError as e:
        raise invalid(str(e)) from None
    ids = new_ids(len(changes))
    source = token.only_source if token is not None else None
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "ts": pa.array([c.ts for c in changes], TS),
        "type": pa.array([f"cdc.{c.op}" for c in changes], pa.string()),
        "source": pa.array([source] * len(changes), pa.string()),
        "namespace": pa.array([namespace] * len(changes), pa.string()),
        "collection": pa.array([name] * len(changes), pa.string()),
        "payload": pa.array([_json({"row": c.row, "seq": c.seq}) for c in changes], pa.string()),
        "ingested_at": pa.array([datetime.now(UTC)] * len(changes), TS),
    }, schema=EVENT_ARROW_SCHEMA)


def webhook(source: str, body: bytes, event_id: str | None, ts: datetime | None) -> pa.Table:
    """One `type = "webhook"` event: the body verbatim as `payload` when it is JSON, else as a JSON string."""
    text = body.decode("utf-8", errors="replace")
    try:
        json.loads(text)
        payload = text
    except ValueError:
        payload = _json(text)
    now = datetime.now(UTC)
    when = ts or now
    return pa.table({
        "id": pa.array([event_id or str(ULID.from_datetime(when))], pa.string()),
        "ts": pa.array([when], TS),
        "type": pa.array(["webhook"], pa.string()),
        "source": pa.array([source], pa.string()),
        "namespace": pa.nulls(1, pa.string()),
        "collection": pa.nulls(1, pa.string()),
        "payload": pa.array([payload], pa.string()),
        "ingested_at": pa.array([now], TS),
    }, schema=EVENT_ARROW_SCHEMA)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


__all__ = ["CollectionShapes", "cdc", "events", "precheck", "rpc", "sources", "webhook"]
