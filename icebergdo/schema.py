"""The raw event table's schema, and turning user input into a batch that fits it.

Validation happens here, before anything is written, so a bad event fails its whole batch
with a message naming the event and the field, and nothing is committed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import HourTransform, IdentityTransform
from pyiceberg.types import NestedField, StringType, TimestamptzType
from ulid import ULID

from icebergdo.errors import BadInputError

EVENT_SCHEMA = Schema(
    NestedField(1, "id", StringType(), required=True, doc="ULID; assigned when absent"),
    NestedField(2, "ts", TimestamptzType(), required=True, doc="when the event happened (UTC, µs)"),
    NestedField(3, "type", StringType(), required=True, doc="webhook, rpc, cdc, ws, custom or dotted e.g. collection.update"),
    NestedField(4, "source", StringType(), required=False),
    NestedField(5, "namespace", StringType(), required=False),
    NestedField(6, "collection", StringType(), required=False),
    NestedField(7, "payload", StringType(), required=False, doc="JSON text"),
    NestedField(8, "ingested_at", TimestamptzType(), required=True),
    identifier_field_ids=[1],
)
EVENT_PARTITION_SPEC = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=HourTransform(), name="ts_hour"))
EVENT_SORT_ORDER = SortOrder(SortField(source_id=2, transform=IdentityTransform()))

TS = pa.timestamp("us", tz="UTC")
EVENT_ARROW_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("namespace", pa.string()),
        pa.field("collection", pa.string()),
        pa.field("payload", pa.string()),
        pa.field("ingested_at", TS, nullable=False),
    ]
)
EVENT_COLUMNS = tuple(EVENT_ARROW_SCHEMA.names)
_OPTIONAL_TEXT = ("source", "namespace", "collection")

Unknown = Literal["error", "payload", "keep"]


def parse_ts(value: Any, where: str = "ts") -> datetime:
    """ISO-8601 text (naive means UTC), epoch milliseconds, or a datetime → aware UTC datetime."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, bool) or value is None:
        raise BadInputError(f"{where}: expected ISO-8601 text or epoch milliseconds, got {value!r}")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise BadInputError(f"{where}: {value!r} is not a time")
        try:
            return datetime.fromtimestamp(value / 1000.0, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise BadInputError(f"{where}: epoch milliseconds {value!r} out of range") from None
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return parse_ts(int(text), where)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise BadInputError(f"{where}: cannot parse time {value!r} (use ISO-8601 or epoch ms)") from None
        return parse_ts(parsed, where)
    raise BadInputError(f"{where}: expected ISO-8601 text or epoch milliseconds, got {type(value).__name__}")


def payload_json(value: Any, where: str = "payload") -> str | None:
    """Any JSON-serialisable value → JSON text (NaN/Infinity are not JSON and are refused)."""
    if value is None:
        return None
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise BadInputError(f"{where}: not JSON-serialisable ({e})") from None


def _text(value: Any, where: str, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise BadInputError(f"{where}: required")
        return None
    if not isinstance(value, str):
        raise BadInputError(f"{where}: expected text, got {type(value).__name__}")
    if required and not value:
        raise BadInputError(f"{where}: must not be empty")
    return value


def events_from_rows(
    rows: Iterable[Any],
    *,
    labels: Sequence[str] | None = None,
    unknown: Unknown = "error",
    now: datetime | None = None,
) -> pa.Table:
    """Validate event dicts and build one Arrow batch in the table's schema.

    `labels[i]` names row i in errors (e.g. "line 17"); `unknown` says what to do with
    top-level fields the table has no column for: refuse, fold into `payload`, or keep
    as extra columns (the caller then evolves the schema).
    """
    ingested = now or datetime.now(UTC)
    cols: dict[str, list[Any]] = {c: [] for c in EVENT_COLUMNS}
    extra: dict[str, list[Any]] = {}
    for i, row in enumerate(rows):
        label = labels[i] if labels is not None else f"event #{i + 1}"
        if not isinstance(row, Mapping):
            raise BadInputError(f"{label}: expected a JSON object, got {type(row).__name__}")
        if "ts" not in row:
            raise BadInputError(f"{label}: missing required field 'ts'")
        rid = row.get("id")
        if rid is None:
            rid = str(ULID.from_datetime(parse_ts(row["ts"], f"{label}: field 'ts'")))
        cols["id"].append(_text(rid, f"{label}: field 'id'", required=True))
        cols["ts"].append(parse_ts(row["ts"], f"{label}: field 'ts'"))
        cols["type"].append(_text(row.get("type"), f"{label}: field 'type'", required=True))
        for name in _OPTIONAL_TEXT:
            cols[name].append(_text(row.get(name), f"{label}: field '{name}'"))
        payload = row.get("payload")
        unknown_keys = [k for k in row if k not in EVENT_COLUMNS]
        if unknown_keys:
            if unknown == "error":
                raise BadInputError(
                    f"{label}: unknown field(s) {', '.join(map(repr, unknown_keys))} "
                    f"(columns are {', '.join(EVENT_COLUMNS)}; put other data in 'payload')"
                )
            if unknown == "payload":
                merged = dict(payload) if isinstance(payload, Mapping) else ({} if payload is None else {"value": payload})
                for k in unknown_keys:
                    merged.setdefault(k, row[k])
                payload = merged
            else:
                for k in unknown_keys:
                    extra.setdefault(k, [None] * (len(cols["id"]) - 1)).append(row[k])
        for values in extra.values():
            if len(values) < len(cols["id"]):
                values.append(None)
        cols["payload"].append(payload_json(payload, f"{label}: field 'payload'"))
        ia = row.get("ingested_at")
        cols["ingested_at"].append(parse_ts(ia, f"{label}: field 'ingested_at'") if ia is not None else ingested)
    arrays = [pa.array(cols[f.name], type=f.type) for f in EVENT_ARROW_SCHEMA]
    table = pa.Table.from_arrays(arrays, schema=EVENT_ARROW_SCHEMA)
    for k, values in extra.items():
        try:
            table = table.append_column(k, pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise BadInputError(f"field {k!r}: values of mixed types cannot form one column ({e})") from None
    return table


def ts_to_utc(ts: pa.Array | pa.ChunkedArray, what: str) -> pa.Array | pa.ChunkedArray:
    """An Arrow time column (timestamp, epoch ms, or ISO text) as UTC µs timestamps; nulls stay null."""
    try:
        if pa.types.is_timestamp(ts.type):
            return ts.cast(TS) if ts.type.tz else pc.assume_timezone(ts, "UTC").cast(TS)
        if pa.types.is_integer(ts.type):
            return pc.multiply(ts.cast(pa.int64()), 1000).cast(TS)
        # text, dates, floats: value by value, so an error names the row
        return pa.array([parse_ts(v, f"row {i + 1}: field 'ts'") if v is not None else None for i, v in enumerate(ts.to_pylist())], TS)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise BadInputError(f"{what}: column 'ts': {e}") from None


def events_from_arrow(table: pa.Table, *, now: datetime | None = None, unknown: Unknown = "error") -> pa.Table:
    """Vectorised path for Arrow input: cast to the table schema, fill `id`/`ingested_at`."""
    names = set(table.column_names)
    missing = [c for c in ("ts", "type") if c not in names]
    if missing:
        raise BadInputError(f"Arrow batch: missing required column(s) {', '.join(map(repr, missing))}")
    unknown_cols = [c for c in table.column_names if c not in EVENT_COLUMNS]
    if unknown_cols and unknown == "error":
        raise BadInputError(
            f"Arrow batch: unknown column(s) {', '.join(map(repr, unknown_cols))} (columns are {', '.join(EVENT_COLUMNS)})"
        )
    if unknown_cols and unknown == "payload":
        raise BadInputError("Arrow batch: folding extra columns into 'payload' needs row input; drop or rename them")
    n = table.num_rows
    ts = ts_to_utc(table.column("ts"), "Arrow batch")
    if ts.null_count:
        raise BadInputError(f"Arrow batch: column 'ts' has {ts.null_count} null value(s)")
    out: dict[str, Any] = {"ts": ts}
    if "id" in names and table.column("id").null_count == 0:
        out["id"] = table.column("id")
    else:
        given = table.column("id").to_pylist() if "id" in names else [None] * n
        stamps = ts.to_pylist()
        out["id"] = pa.array([g if g is not None else str(ULID.from_datetime(t)) for g, t in zip(given, stamps, strict=False)], pa.string())
    if "ingested_at" in names:
        out["ingested_at"] = table.column("ingested_at")
    else:
        out["ingested_at"] = pa.repeat(pa.scalar(now or datetime.now(UTC), TS), n)
    for name in ("type", "source", "namespace", "collection", "payload"):
        out[name] = table.column(name) if name in names else pa.nulls(n, pa.string())
    if table.column("type").null_count:
        raise BadInputError("Arrow batch: column 'type' has null value(s)")
    arrays = []
    for f in EVENT_ARROW_SCHEMA:
        try:
            arrays.append(out[f.name].cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise BadInputError(f"Arrow batch: column {f.name!r}: {e}") from None
    result = pa.Table.from_arrays(arrays, schema=EVENT_ARROW_SCHEMA)
    for c in unknown_cols:
        result = result.append_column(c, table.column(c))
    return result


def to_events(rows: Any, **kw: Any) -> pa.Table:
    """Dispatch: a `pyarrow.Table`/`RecordBatch` takes the vectorised path, anything iterable the row path."""
    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    if isinstance(rows, pa.Table):
        kw.pop("labels", None)
        return events_from_arrow(rows, **kw)
    if isinstance(rows, (Mapping, str, bytes)):
        raise BadInputError("expected a list of events (dicts) or a pyarrow.Table, got a single " + type(rows).__name__)
    return events_from_rows(rows, **kw)
