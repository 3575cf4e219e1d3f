"""The raw event table's schema, and turning user input into a batch that fits it.

Validation happens here, before anything is written, so a bad event fails its whole batch with a
message naming the event and the field, and nothing is committed.

Three kinds of input, one set of rules, one set of messages:

- a `pyarrow.Table` (`events_from_arrow`): typed columns;
- dicts (`events_from_rows`): each field gathered into a column (Arrow infers the type), each
  payload serialised to JSON text;
- JSON lines (`events_from_json_lines`, used by `icebergdo ingest`): DuckDB parses the whole chunk
  and extracts every field with its JSON type in one vectorised query.

Each adapter produces the same typed field columns plus a per-row "bad" mask, and `_assemble`
does the rest column-wise: time parsing (`icebergdo.times`), required/empty checks, the
plausibility window, ids for events without one (`icebergdo.ids`, the whole batch at once).
Per-row Python runs only to explain a bad row: `check_event` validates one event field by field,
in a fixed order, and its message is the one the user sees, whatever the path. (If it finds
nothing, the vectorised check's own reason is reported.)

Why JSON lines go through DuckDB: `json.loads` of a 400-byte event costs more than DuckDB's parse,
field extraction and type tagging together. DuckDB's parser is more lenient than JSON in three
ways, and each is caught: NaN/Infinity literals and trailing commas (a cheap regex picks candidate
lines, which are then decided by `check_event`), and repeated keys (flagged from `json_keys`).
Nesting deeper than `MAX_NESTING` levels is refused on every path (Python's parser would raise
RecursionError), as is text that is not valid Unicode (a lone surrogate).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import HourTransform, IdentityTransform
from pyiceberg.types import NestedField, StringType, TimestamptzType

from icebergdo import arrays
from icebergdo import ids as ulid
from icebergdo.errors import BadInputError
from icebergdo.times import (
    DEFAULT_RULE,
    TS,
    TimeRule,
    check_one,
    check_window,
    iso,
    micros_of,
    micros_one,
    parse_ts,
)

__all__ = [
    "check_new_columns",
    "EVENT_ARROW_SCHEMA",
    "EVENT_COLUMNS",
    "EVENT_PARTITION_SPEC",
    "EVENT_SCHEMA",
    "EVENT_SORT_ORDER",
    "MAX_NESTING",
    "TS",
    "Unknown",
    "check_event",
    "events_from_arrow",
    "events_from_json_lines",
    "events_from_rows",
    "parse_ts",
    "payload_json",
    "to_events",
    "ts_to_utc",
]

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
_KNOWN = frozenset(EVENT_COLUMNS)
_TEXT = ("id", "type", "source", "namespace", "collection")
_OPTIONAL_TEXT = ("source", "namespace", "collection")
MAX_NESTING = 512  # JSON deeper than this is refused (Python's own parser gives up near 1000)

Unknown = Literal["error", "payload", "keep"]
Labels = Callable[[int], str]


# -- one event, field by field: the messages ----------------------------------------------------
def _unicode(value: str, where: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadInputError(f"{where}: not valid Unicode text (lone surrogate {value[e.start]!r} at character {e.start + 1})") from None
    return value


def _text(value: Any, where: str, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise BadInputError(f"{where}: required")
        return None
    if not isinstance(value, str):
        raise BadInputError(f"{where}: expected text, got {type(value).__name__}")
    if required and not value:
        raise BadInputError(f"{where}: must not be empty")
    return _unicode(value, where)


def _depth(value: Any) -> int:
    """Nesting depth of a JSON-like value (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, Mapping):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, (list, tuple)):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v)
    return deepest


def payload_json(value: Any, where: str = "payload") -> str | None:
    """Any JSON-serialisable value → JSON text (NaN/Infinity are not JSON and are refused)."""
    if value is None:
        return None
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise BadInputError(f"{where}: not JSON-serialisable ({e})") from None
    except RecursionError:
        raise BadInputError(f"{where}: nested deeper than {MAX_NESTING} levels") from None
    if text.count("{") + text.count("[") > MAX_NESTING and _depth(value) > MAX_NESTING:
        raise BadInputError(f"{where}: nested deeper than {MAX_NESTING} levels")
    return _unicode(text, where)


def check_event(
    row: Any,
    label: str,
    *,
    unknown: Unknown = "error",
    rule: TimeRule = DEFAULT_RULE,
    payload_is_text: bool = False,
    now: datetime | None = None,
) -> None:
    """Validate one event, field by field in a fixed order; raise `BadInputError` naming the first problem.

    This is the reference every vectorised path is explained by: when a column check flags a row,
    this function says why. `payload_is_text`: the payload is already JSON text (Arrow input).
    """
    if not isinstance(row, Mapping):
        raise BadInputError(f"{label}: expected a JSON object, got {type(row).__name__}")
    if "ts" not in row:
        raise BadInputError(f"{label}: missing required field 'ts'")
    rid = row.get("id")
    if rid is not None:
        _text(rid, f"{label}: field 'id'", required=True)
    where = f"{label}: field 'ts'"
    micros = micros_one(row["ts"], where, rule.unit)
    check_one(micros, rule, where, now)
    if rid is None and micros < 0:
        raise BadInputError(
            f"{where}: {iso(micros)} is before 1970-01-01: an event without 'id' gets a ULID, which starts with "
            f"its time and cannot hold an earlier one; give the event an 'id'"
        )
    _text(row.get("type"), f"{label}: field 'type'", required=True)
    for name in _OPTIONAL_TEXT:
        _text(row.get(name), f"{label}: field '{name}'")
    unknown_keys = [k for k in row if k not in _KNOWN]
    if unknown_keys and unknown == "error":
        raise BadInputError(
            f"{label}: unknown field(s) {', '.join(map(repr, unknown_keys))} "
            f"(columns are {', '.join(EVENT_COLUMNS)}; put other data in 'payload')"
        )
    payload = row.get("payload")
    if payload_is_text:
        _text(payload, f"{label}: field 'payload'")
    else:
        payload_json(payload, f"{label}: field 'payload'")
    ia = row.get("ingested_at")
    if ia is not None:
        micros_one(ia, f"{label}: field 'ingested_at'", rule.unit)


# -- the shared column-wise part ----------------------------------------------------------------
class _Fields:
    """What an adapter hands to `_assemble`: typed columns (nulls = absent) and per-row flags."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.bad = pa.repeat(pa.scalar(False), n)  # rows an adapter already knows are bad
        self.cols: dict[str, pa.Array] = {}
        self.ts_present = pa.repeat(pa.scalar(True), n)  # the key `ts` exists (null or not)
        self.extra: dict[str, pa.Array] = {}
        self.candidates: set[int] = set()  # rows only `check_event` can decide (rare: see _flag_deep, _LENIENT)

    def flag(self, mask: pa.Array) -> None:
        self.bad = pc.or_(self.bad, pc.fill_null(mask, False))


def _first_bad(bad: pa.Array) -> int | None:
    if not pc.any(bad).as_py():
        return None
    return int(pc.index(bad, True).as_py())


def _time_column(values: pa.Array, rule: TimeRule) -> tuple[pa.Array, pa.Array]:
    """(int64 µs, bad) where bad = a non-null value that is not a time."""
    micros = micros_of(values, rule.unit)
    return micros, pc.and_(values.is_valid(), micros.is_null())


def _assemble(
    f: _Fields,
    *,
    explain: Callable[[int], None],
    rule: TimeRule,
    now: datetime | None,
    seed: bytes | None,
    skip: bool,
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Column checks, ids, the Arrow batch. Returns (good rows, [(row, message)] of bad rows if `skip`)."""
    n = f.n
    if f.candidates:
        decided = [False] * n
        for i in sorted(f.candidates):
            try:
                explain(i)
            except (BadInputError, RecursionError):
                decided[i] = True
        f.flag(pa.array(decided))
    bad = f.bad
    ts_micros, ts_bad = _time_column(f.cols["ts"], rule)
    bad = pc.or_(bad, ts_bad)
    bad = pc.or_(bad, pc.invert(f.ts_present))
    bad = pc.or_(bad, pc.fill_null(pc.is_null(f.cols["ts"]), True))
    bad = pc.or_(bad, check_window(ts_micros, rule, now))
    ids = f.cols["id"]
    no_id = ids.is_null()
    bad = pc.or_(bad, pc.and_(no_id, pc.fill_null(pc.less(ts_micros, 0), False)))
    bad = pc.or_(bad, pc.fill_null(pc.equal(pc.utf8_length(ids), 0), False))
    kind = f.cols["type"]
    bad = pc.or_(bad, pc.fill_null(pc.equal(pc.utf8_length(kind), 0), True))
    if "ingested_at" in f.cols:
        ia_micros, ia_bad = _time_column(f.cols["ingested_at"], rule)
        bad = pc.or_(bad, ia_bad)
    else:
        ia_micros = pa.nulls(n, pa.int64())
    problems: list[tuple[int, str]] = []
    if pc.any(bad).as_py():
        rows = pc.indices_nonzero(bad).to_pylist()
        for i in rows if skip else rows[:1]:
            try:
                explain(i)
            except BadInputError as e:
                problems.append((i, str(e)))
                continue
            except RecursionError:
                problems.append((i, f"row {i + 1}: nested deeper than {MAX_NESTING} levels"))
                continue
            problems.append((i, f"row {i + 1}: rejected by the column checks"))
        if not skip:
            raise BadInputError(problems[0][1])
        keep = pc.invert(bad)
        f.cols = {k: v.filter(keep) for k, v in f.cols.items()}
        f.extra = {k: v.filter(keep) for k, v in f.extra.items()}
        ts_micros, ia_micros, no_id = ts_micros.filter(keep), ia_micros.filter(keep), no_id.filter(keep)
        n = len(ts_micros)
    ts = ts_micros.cast(TS)
    ids = f.cols["id"]
    if pc.any(no_id).as_py():
        ms = pc.divide(pc.if_else(no_id, ts_micros, 0), 1000)  # >= 0 here: earlier times without id were refused
        ids = pc.if_else(no_id, ulid.ulids(ms, seed), ids)
    stamp = pa.scalar(now or datetime.now(UTC), TS)
    out = {
        "id": ids,
        "ts": ts,
        "type": f.cols["type"],
        "source": f.cols.get("source", pa.nulls(n, pa.string())),
        "namespace": f.cols.get("namespace", pa.nulls(n, pa.string())),
        "collection": f.cols.get("collection", pa.nulls(n, pa.string())),
        "payload": f.cols.get("payload", pa.nulls(n, pa.string())),
        "ingested_at": pc.fill_null(ia_micros.cast(TS), stamp),
    }
    arrays = [out[field.name].cast(field.type) for field in EVENT_ARROW_SCHEMA]
    table = pa.Table.from_arrays(arrays, schema=EVENT_ARROW_SCHEMA)
    for name, values in f.extra.items():
        table = table.append_column(name, values)
    return table, problems


# -- dicts --------------------------------------------------------------------------------------
def _text_column(values: list[Any]) -> tuple[pa.Array, pa.Array | None]:
    """Values that should be text → (string array, bad mask or None when all fine)."""
    try:
        return pa.array(values, pa.string()), None
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
        pass
    clean, bad = [], []
    for v in values:
        ok = v is None or (isinstance(v, str) and _encodes(v))
        clean.append(v if ok else None)
        bad.append(not ok)
    return pa.array(clean, pa.string()), pa.array(bad)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _dict_times(values: list[Any], rule: TimeRule) -> tuple[pa.Array, pa.Array]:
    """(int64 µs, bad) for Python time values of any mix of kinds."""
    try:
        arr = pa.array(values)
        t = arr.type
        if pa.types.is_null(t) or pa.types.is_timestamp(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t) or pa.types.is_date(t):
            return _time_column(arr, rule)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError, OverflowError):
        pass
    micros: list[int | None] = []
    bad: list[bool] = []
    for v in values:
        if v is None:
            micros.append(None)
            bad.append(False)
            continue
        try:
            micros.append(micros_one(v, "ts", rule.unit))
            bad.append(False)
        except BadInputError:
            micros.append(None)
            bad.append(True)
    return pa.array(micros, pa.int64()), pa.array(bad)


def events_from_rows(
    rows: Iterable[Any],
    *,
    labels: Sequence[str] | None = None,
    unknown: Unknown = "error",
    now: datetime | None = None,
    rule: TimeRule = DEFAULT_RULE,
    seed: bytes | None = None,
    skip: bool = False,
    problems: list[tuple[int, str]] | None = None,
) -> pa.Table:
    """Validate event dicts and build one Arrow batch in the table's schema.

    `labels[i]` names row i in errors (e.g. "line 17"); `unknown` says what to do with top-level
    fields the table has no column for: refuse, fold into `payload`, or keep as extra columns (the
    caller then evolves the schema). `skip=True` drops bad rows instead of raising and appends
    (row index, message) to `problems`.
    """
    rows = rows if isinstance(rows, list) else list(rows)
    n = len(rows)

    def label(i: int) -> str:
        return labels[i] if labels is not None else f"event #{i + 1}"

    maps = [r if isinstance(r, Mapping) else None for r in rows]
    f = _Fields(n)
    not_map = [m is None for m in maps]
    if any(not_map):
        f.flag(pa.array(not_map))
    empty: Mapping[str, Any] = {}
    rows_m = [m if m is not None else empty for m in maps]
    unknown_rows = [i for i, m in enumerate(rows_m) if not m.keys() <= _KNOWN]
    extra: dict[str, list[Any]] = {}
    payloads = [m.get("payload") for m in rows_m]
    if unknown_rows:
        if unknown == "error":
            has_unknown = [False] * n
            for i in unknown_rows:
                has_unknown[i] = True
            f.flag(pa.array(has_unknown))
        elif unknown == "payload":
            for i in unknown_rows:
                m, p = rows_m[i], payloads[i]
                merged = dict(p) if isinstance(p, Mapping) else ({} if p is None else {"value": p})
                for k in m:
                    if k not in _KNOWN:
                        merged.setdefault(k, m[k])
                payloads[i] = merged
        else:
            for i in unknown_rows:
                for k, v in rows_m[i].items():
                    if k not in _KNOWN:
                        if k not in extra:  # a new column: refuse one readers would confuse with another
                            check_new_columns([*_KNOWN, *extra], [k], where=f"{label(i)}: field")
                        extra.setdefault(k, [None] * n)[i] = v
    for name in _TEXT:
        col, mask = _text_column([m.get(name) for m in rows_m])
        f.cols[name] = col
        if mask is not None:
            f.flag(mask)
    f.ts_present = pa.array(["ts" in m for m in rows_m])
    ts_values = [m.get("ts") for m in rows_m]
    f.cols["ts"], ts_bad = _dict_times(ts_values, rule)
    f.flag(ts_bad)
    ia_values = [m.get("ingested_at") for m in rows_m]
    if any(v is not None for v in ia_values):
        f.cols["ingested_at"], ia_bad = _dict_times(ia_values, rule)
        f.flag(ia_bad)
    texts: list[str | None] = []
    bad_payload = [False] * n
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
    for i, p in enumerate(payloads):
        if p is None:
            texts.append(None)
            continue
        try:
            texts.append(dumps(p))
        except (TypeError, ValueError, RecursionError):
            texts.append(None)
            bad_payload[i] = True
    if any(bad_payload):
        f.flag(pa.array(bad_payload))
    col, mask = _text_column(texts)
    if mask is not None:
        f.flag(mask)
    f.cols["payload"] = col
    _flag_deep(f, col)
    for k, values in extra.items():
        try:
            f.extra[k] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError) as e:
            raise BadInputError(f"field {k!r}: values of mixed types cannot form one column ({e})") from None

    def explain(i: int) -> None:
        check_event(rows[i], label(i), unknown=unknown, rule=rule, now=now)

    # The ts column already holds µs here: _assemble must not re-read it with the unit rule.
    f.cols["ts"] = f.cols["ts"].cast(TS)
    if "ingested_at" in f.cols:
        f.cols["ingested_at"] = f.cols["ingested_at"].cast(TS)
    table, found = _assemble(f, explain=explain, rule=rule, now=now, seed=seed, skip=skip)
    if problems is not None:
        problems.extend(found)
    return table


def _flag_deep(f: _Fields, payload: pa.Array) -> None:
    """Payloads with more than MAX_NESTING brackets may nest too deep: `check_event` decides those."""
    long = pc.fill_null(pc.greater(pc.binary_length(payload), MAX_NESTING), False)
    if len(payload) == 0 or not pc.any(long).as_py():
        return
    payload = pc.if_else(long, payload, pa.scalar(None, pa.string()))
    brackets = pc.add(pc.count_substring(payload, "{"), pc.count_substring(payload, "["))
    f.candidates.update(pc.indices_nonzero(pc.fill_null(pc.greater(brackets, MAX_NESTING), False)).to_pylist())


# -- Arrow --------------------------------------------------------------------------------------
def ts_to_utc(ts: pa.Array | pa.ChunkedArray, what: str, unit: str = "auto") -> pa.Array:
    """An Arrow time column (timestamp, epoch number, or ISO text) as UTC µs timestamps; nulls stay null."""
    ts = arrays.array(ts)
    micros, bad = _time_column(ts, TimeRule(unit=unit))  # type: ignore[arg-type]
    i = _first_bad(bad)
    if i is not None:
        micros_one(ts[i].as_py(), f"row {i + 1}: field 'ts'", unit)  # raises with the reason
        raise BadInputError(f"{what}: row {i + 1}: field 'ts': not a time")
    if not (pa.types.is_timestamp(ts.type) or pa.types.is_date(ts.type) or pa.types.is_integer(ts.type)
            or pa.types.is_floating(ts.type) or pa.types.is_string(ts.type) or pa.types.is_large_string(ts.type) or pa.types.is_null(ts.type)):
        raise BadInputError(f"{what}: column 'ts' of type {ts.type} is not a time")
    return micros.cast(TS)


def events_from_arrow(
    table: pa.Table,
    *,
    now: datetime | None = None,
    unknown: Unknown = "error",
    rule: TimeRule = DEFAULT_RULE,
    seed: bytes | None = None,
) -> pa.Table:
    """Vectorised path for Arrow input: typed columns checked and cast column-wise, ids for the whole batch."""
    names = set(table.column_names)
    missing = [c for c in ("ts", "type") if c not in names]
    if missing:
        raise BadInputError(f"Arrow batch: missing required column(s) {', '.join(map(repr, missing))}")
    unknown_cols = [c for c in table.column_names if c not in _KNOWN]
    if unknown_cols and unknown == "error":
        raise BadInputError(
            f"Arrow batch: unknown column(s) {', '.join(map(repr, unknown_cols))} (columns are {', '.join(EVENT_COLUMNS)})"
        )
    if unknown_cols and unknown == "payload":
        raise BadInputError("Arrow batch: folding extra columns into 'payload' needs row input; drop or rename them")
    check_new_columns(_KNOWN, unknown_cols, where="Arrow batch: column")
    n = table.num_rows
    f = _Fields(n)
    for name in (*_TEXT, "payload"):
        if name not in names:
            f.cols[name] = pa.nulls(n, pa.string())
            continue
        col = arrays.array(table.column(name))
        if pa.types.is_null(col.type):
            col = col.cast(pa.string())
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_dictionary(col.type)):
            raise BadInputError(f"Arrow batch: column {name!r} must be text, got {col.type}")
        f.cols[name] = col.cast(pa.string())
    for name in ("ts", "ingested_at"):
        if name in names:
            col = arrays.array(table.column(name))
            t = col.type
            if not (pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_integer(t) or pa.types.is_floating(t)
                    or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
                raise BadInputError(f"Arrow batch: column {name!r} of type {t} is not a time")
            f.cols[name] = col.cast(pa.string()) if pa.types.is_large_string(t) else col
    for c in unknown_cols:
        f.extra[c] = arrays.array(table.column(c))

    def explain(i: int) -> None:
        row = table.slice(i, 1).to_pylist()[0]
        for c in unknown_cols:
            row.pop(c, None)
        if row.get("ts") is None:
            raise BadInputError(f"row {i + 1}: field 'ts': required (null)")
        check_event(row, f"row {i + 1}", unknown=unknown, rule=rule, payload_is_text=True, now=now)

    table_out, _ = _assemble(f, explain=explain, rule=rule, now=now, seed=seed, skip=False)
    return table_out


# -- JSON lines ---------------------------------------------------------------------------------
_local = threading.local()
# What DuckDB's parser accepts and JSON does not: NaN/Infinity literals and trailing commas. Lines that
# match (also when the match is inside a string: rare) are decided by `check_event` on Python's parse.
_LENIENT = r"(?i)[:\[,]\s*[-+]?(nan|inf)|,\s*[\]}]"
_INT = r"^-?[0-9]+$"
_NUMBER_START = r"^[-0-9]"


def _duck() -> duckdb.DuckDBPyConnection:
    con = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect(":memory:")
        _local.con = con
    return con


_STRUCT = json.dumps({c: "JSON" for c in EVENT_COLUMNS})  # every field as its JSON text: one parse per line
_KNOWN_ARRAY = pa.array(EVENT_COLUMNS, pa.string())
_QUERY = f"""
SELECT s IS NOT NULL AND keys IS NOT NULL AS ok, keys,
       {", ".join(f's."{c}"::VARCHAR AS j_{c}' for c in EVENT_COLUMNS)},
       TRY_CAST(s.ts::VARCHAR AS BIGINT) AS i_ts, TRY_CAST(s.ts::VARCHAR AS DOUBLE) AS f_ts,
       TRY_CAST(s.ingested_at::VARCHAR AS BIGINT) AS i_ingested_at, TRY_CAST(s.ingested_at::VARCHAR AS DOUBLE) AS f_ingested_at
FROM (SELECT try(json_transform(line, '{_STRUCT}')) AS s, try(json_keys(line)) AS keys FROM lines)
"""


def _key_checks(keys: pa.Array, n: int) -> tuple[pa.Array, pa.Array]:
    """From each line's top-level keys: (every key known and none repeated, has a `ts` key)."""
    flat = keys.flatten()
    parent = pc.list_parent_indices(keys)
    bad = pc.indices_nonzero(pc.invert(pc.is_in(flat, value_set=_KNOWN_ARRAY)))
    rows = pc.take(parent, bad).to_pylist()
    per = pa.table({"row": parent, "key": flat}).group_by(["row", "key"]).aggregate([("key", "count")])
    rows += pc.filter(per.column("row"), pc.greater(per.column("key_count"), 1)).to_pylist()
    ok = [True] * n if rows else None
    for r in rows:
        ok[r] = False  # type: ignore[index]
    keys_ok = pa.array(ok) if ok is not None else pa.repeat(pa.scalar(True), n)
    ts_rows = pc.filter(parent, pc.equal(flat, "ts"))
    has_ts = pc.is_in(pa.array(range(n), pa.int64()) if n else pa.array([], pa.int64()), value_set=ts_rows.cast(pa.int64()))
    return pc.and_(keys_ok, keys.is_valid()), has_ts


def _json_strings(j: pa.Array) -> tuple[pa.Array, pa.Array]:
    """JSON texts → (decoded value where the text is a JSON string else null, is-a-string mask)."""
    first = pc.utf8_slice_codeunits(j, 0, 1)
    is_str = pc.fill_null(pc.equal(first, '"'), False)
    if not pc.any(is_str).as_py():
        return pa.nulls(len(j), pa.string()), is_str
    inner = pc.utf8_slice_codeunits(j, 1, -1)
    out = pc.if_else(is_str, inner, pa.scalar(None, pa.string()))
    escaped = pc.and_(is_str, pc.fill_null(pc.match_substring(j, "\\"), False))
    if pc.any(escaped).as_py():  # rare: decode escapes value by value
        values = out.to_pylist()
        for i in pc.indices_nonzero(escaped).to_pylist():
            values[i] = json.loads(j[i].as_py())
        try:
            out = pa.array(values, pa.string())
        except (UnicodeEncodeError, pa.ArrowInvalid):
            out = pa.array([v if v is None or _encodes(v) else None for v in values], pa.string())
    return out, is_str


def _parse_line(line: str) -> Any:
    """A line as Python would read it, for explanations: JSON errors and nesting become BadInputError."""
    pairs: list[list[tuple[str, Any]]] = []

    def hook(items: list[tuple[str, Any]]) -> dict[str, Any]:
        pairs.append(items)
        return dict(items)

    try:
        value = json.loads(line, object_pairs_hook=hook)
    except json.JSONDecodeError as e:
        raise BadInputError(f"invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise BadInputError(f"JSON nested deeper than {MAX_NESTING} levels") from None
    if isinstance(value, dict) and pairs:
        keys = [k for k, _ in pairs[-1]]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise BadInputError(f"field {dup[0]!r} appears more than once")
    return value


def events_from_json_lines(
    lines: pa.Array,
    label: Labels,
    *,
    unknown: Unknown = "error",
    now: datetime | None = None,
    rule: TimeRule = DEFAULT_RULE,
    seed: bytes | None = None,
    skip: bool = False,
    problems: list[tuple[int, str]] | None = None,
) -> pa.Table:
    """Validate JSON text lines (a string array, one event each) into one Arrow batch.

    `label(i)` names line i in errors ("events.jsonl: line 17"). With `unknown` other than "error",
    lines with extra fields need Python's view of them: the chunk takes the dict path.
    """
    n = len(lines)
    if n == 0:
        return EVENT_ARROW_SCHEMA.empty_table()
    con = _duck()
    con.register("lines", pa.table({"line": lines}))
    try:
        res = con.execute(_QUERY).to_arrow_table()
    finally:
        con.unregister("lines")
    keys_ok, has_ts = _key_checks(arrays.array(res.column("keys")), n)
    if unknown != "error" and not pc.all(keys_ok).as_py():
        rows: list[Any] = []
        out_problems: list[tuple[int, str]] = []
        parsed_ok: list[int] = []
        for i, line in enumerate(lines.to_pylist()):
            try:
                rows.append(_parse_line(line))
                parsed_ok.append(i)
            except BadInputError as e:
                if not skip:
                    raise BadInputError(f"{label(i)}: {e}") from None
                out_problems.append((i, f"{label(i)}: {e}"))
        found: list[tuple[int, str]] = []
        table = events_from_rows(rows, labels=[label(i) for i in parsed_ok], unknown=unknown, now=now, rule=rule, seed=seed,
                                 skip=skip, problems=found)
        if problems is not None:
            problems.extend(out_problems + [(parsed_ok[i], msg) for i, msg in found])
            problems.sort()
        return table
    f = _Fields(n)
    col = {name: arrays.array(res.column(name)) for name in res.column_names}
    f.flag(pc.invert(col["ok"]))  # not JSON (or not Unicode: DuckDB refuses lone surrogates)
    f.flag(pc.invert(keys_ok))  # an unknown or repeated field
    f.candidates.update(pc.indices_nonzero(pc.invert(pc.starts_with(lines, "{"))).to_pylist())  # not an object, or leading blanks
    f.ts_present = has_ts
    for name in _TEXT:
        j = col[f"j_{name}"]
        value, is_str = _json_strings(j)
        f.flag(pc.and_kleene(j.is_valid(), pc.and_kleene(pc.invert(is_str), pc.not_equal(j, "null"))))  # present, not text, not null
        f.cols[name] = value
    for name in ("ts", "ingested_at"):
        j = col[f"j_{name}"]
        text, is_str = _json_strings(j)
        is_int = pc.fill_null(pc.match_substring_regex(j, _INT), False)
        is_num = pc.and_(pc.fill_null(pc.match_substring_regex(j, _NUMBER_START), False), pc.invert(is_int))
        ints = pc.if_else(is_int, col[f"i_{name}"], pa.scalar(None, pa.int64()))
        floats = pc.if_else(is_num, col[f"f_{name}"], pa.scalar(None, pa.float64()))
        micros = pc.coalesce(micros_of(text, rule.unit), micros_of(ints, rule.unit), micros_of(floats, rule.unit))
        null = pc.fill_null(pc.equal(j, "null"), False)
        f.flag(pc.and_kleene(j.is_valid(), pc.and_kleene(pc.invert(null), micros.is_null())))
        if name == "ts":
            f.flag(null)  # "ts": null
        f.cols[name] = micros.cast(TS)
    payload = pc.if_else(pc.fill_null(pc.equal(col["j_payload"], "null"), False), pa.scalar(None, pa.string()), col["j_payload"])
    f.cols["payload"] = payload
    _flag_deep(f, payload)
    f.candidates.update(pc.indices_nonzero(pc.fill_null(pc.match_substring_regex(lines, _LENIENT), False)).to_pylist())

    def explain(i: int) -> None:
        line = lines[i].as_py()
        try:
            row = _parse_line(line)
        except BadInputError as e:
            raise BadInputError(f"{label(i)}: {e}") from None
        check_event(row, label(i), unknown=unknown, rule=rule, now=now)

    table, found = _assemble(f, explain=explain, rule=rule, now=now, seed=seed, skip=skip)
    if problems is not None:
        problems.extend(found)
    return table


def to_events(rows: Any, **kw: Any) -> pa.Table:
    """Dispatch: a `pyarrow.Table`/`RecordBatch` takes the Arrow path, anything iterable the row path."""
    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    if isinstance(rows, pa.Table):
        kw.pop("labels", None)
        return events_from_arrow(rows, **kw)
    if isinstance(rows, (Mapping, str, bytes)):
        raise BadInputError("expected a list of events (dicts) or a pyarrow.Table, got a single " + type(rows).__name__)
    return events_from_rows(rows, **kw)


def check_new_columns(known: Iterable[str], new: Iterable[str], where: str = "field") -> None:
    """Refuse new column names that equal a known or another new one when case is ignored.

    Iceberg names are case-sensitive, but DuckDB and Spark are not: a column `ID` next to `id`
    shows up as `ID_1` in DuckDB and makes Spark's reads ambiguous. `where` prefixes the error
    (e.g. "line 17: field").
    """
    seen = {name.lower(): name for name in known}
    for name in new:
        other = seen.get(name.lower())
        if other is not None and other != name:
            raise BadInputError(f"{where} {name!r} differs from the column {other!r} only by case; readers would confuse them (rename it)")
        seen.setdefault(name.lower(), name)
