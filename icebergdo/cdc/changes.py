"""CDC change records → the change-log batch (Arrow), with no I/O.

A change is `{"op", "ts", "seq"?, <row fields>}` (flat) or `{"op", "ts", "seq"?, "row": {...}}`.
Every change gets a version `(ts, seq, id)` where `id` is a ULID given at arrival (`new_ids`), so
the versions of a collection are totally ordered (the fold rule, `fold.py`, relies on it). Errors
name the change (its line or label) and the field.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from ulid import ULID

from icebergdo.errors import BadInputError
from icebergdo.schema import MAX_NESTING, TS, parse_ts, ts_to_utc

OPS = ("insert", "update", "delete")
# Log-only columns, then the version columns that the current state keeps too.
LOG_META = pa.schema(
    [
        pa.field("_id", pa.string(), nullable=False),
        pa.field("_op", pa.string(), nullable=False),
        pa.field("_key", pa.string(), nullable=False),
        pa.field("_ts", TS, nullable=False),
        pa.field("_seq", pa.int64(), nullable=False),
    ]
)
VERSION_COLS = ("_ts", "_seq", "_id")
RESERVED = frozenset(LOG_META.names)
ENVELOPE = frozenset({"op", "ts", "seq"})

_id_lock = threading.Lock()
_last_id = 0


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_LOW_BITS = 40  # the last 8 characters of a ULID string


def _encode(value: int, chars: int) -> str:
    out = []
    for _ in range(chars):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_ids(n: int) -> list[str]:
    """`n` ULIDs, strictly increasing within this process, so arrival order breaks version ties."""
    global _last_id
    with _id_lock:
        base = max(int(ULID()), _last_id + 1)
        _last_id = base + n - 1
    low = base & ((1 << _LOW_BITS) - 1)
    if low + n >= 1 << _LOW_BITS:  # the low part would carry: encode each id fully (rare)
        return [_encode(base + i, 26) for i in range(n)]
    prefix = _encode(base >> _LOW_BITS, 18)
    return [prefix + _encode(low + i, 8) for i in range(n)]


def input_ids(digest: str, n: int) -> list[str]:
    """Change ids for the `n` changes of one input whose content hash is `digest` (hex): a re-run gives the same ids.

    ULIDs whose 48-bit "time" and next 40 bits come from the hash and whose last 40 bits are the line
    index: unique per input and line, increasing in line order (so within one input the later line
    wins a `(ts, seq)` tie, as arrival order would), and all ids of one input share a prefix, so
    the log files holding them are found by `_id` bounds (`Collection.apply(skip_logged=True)`).
    """
    prefix = _encode(int(digest[:22].ljust(22, "0"), 16), 18)  # 88 bits of the hash in 18 characters (the first is 0-7)
    if n >= 1 << _LOW_BITS:
        raise BadInputError(f"too many changes in one input ({n})")
    return [prefix + _encode(i, 8) for i in range(n)]


def _check_values(row: Mapping[str, Any], label: str) -> None:
    """Text must be valid Unicode (no lone surrogates) and values nested at most MAX_NESTING deep."""
    stack: list[tuple[str, Any, int]] = [(k, v, 1) for k, v in row.items()]
    while stack:
        name, value, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise BadInputError(f"{label}: field {name!r}: not valid Unicode text (lone surrogate)") from None
        elif isinstance(value, Mapping):
            if depth > MAX_NESTING:
                raise BadInputError(f"{label}: field {name!r}: nested deeper than {MAX_NESTING} levels")
            for k, v in value.items():
                if isinstance(k, str):
                    stack.append((name, k, depth + 1))
                stack.append((name, v, depth + 1))
        elif isinstance(value, (list, tuple)):
            if depth > MAX_NESTING:
                raise BadInputError(f"{label}: field {name!r}: nested deeper than {MAX_NESTING} levels")
            stack.extend((name, v, depth + 1) for v in value)


@dataclass(frozen=True)
class Change:
    op: str
    ts: datetime
    seq: int
    row: dict[str, Any]
    label: str


def key_column(cols: Sequence[pa.Array | pa.ChunkedArray]) -> pa.Array | pa.ChunkedArray:
    """`key_text` for whole columns; vectorised for the common single integer or plain-text key."""
    if len(cols) == 1:
        col = cols[0]
        if pa.types.is_integer(col.type):
            return pc.cast(col, pa.string())
        if pa.types.is_string(col.type) and not pc.any(pc.match_substring_regex(col, r'["\\\x00-\x1f\x7f-\x{10ffff}]')).as_py():
            return pc.binary_join_element_wise('"', col, '"', "")
    return pa.array([key_text(v) for v in zip(*(c.to_pylist() for c in cols), strict=True)], pa.string())


def key_text(values: Sequence[Any]) -> str:
    """The `_key` column: JSON of the key value (a list for composite keys)."""
    return json.dumps(values[0] if len(values) == 1 else list(values), separators=(",", ":"), ensure_ascii=False)


def parse_changes(
    changes: Iterable[Any],
    key: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    now: datetime | None = None,
) -> list[Change]:
    """Validate the change envelopes (op, ts, seq, key presence); values are checked in `build_batch`."""
    if isinstance(changes, (Mapping, str, bytes)):
        raise BadInputError("expected a list of changes (dicts), got a single " + type(changes).__name__)
    arrival = now or datetime.now(UTC)
    out: list[Change] = []
    for i, ch in enumerate(changes):
        label = labels[i] if labels is not None else f"change #{i + 1}"
        if not isinstance(ch, Mapping):
            raise BadInputError(f"{label}: expected a JSON object, got {type(ch).__name__}")
        op = ch.get("op")
        if op not in OPS:
            raise BadInputError(f"{label}: field 'op' must be one of {', '.join(OPS)}, got {op!r}")
        ts = parse_ts(ch["ts"], f"{label}: field 'ts'") if ch.get("ts") is not None else arrival
        seq = ch.get("seq", 0)
        if seq is None:
            seq = 0
        if isinstance(seq, bool) or not isinstance(seq, int) or not -(2**63) <= seq < 2**63:
            raise BadInputError(f"{label}: field 'seq' must be a 64-bit integer, got {seq!r}")
        if "row" in ch and isinstance(ch["row"], Mapping):
            extra = [k for k in ch if k not in ENVELOPE | {"row", "key"} and k not in key]
            if extra:
                raise BadInputError(
                    f"{label}: unknown field(s) {', '.join(map(repr, extra))} next to 'row' (allowed: op, ts, seq, key, row, key fields)"
                )
            row = dict(ch["row"])
            given_key = ch.get("key")
            kv = {k: ch[k] for k in key if k in ch}
            if given_key is not None:
                if isinstance(given_key, Mapping):
                    kv.update(given_key)
                elif len(key) == 1:
                    kv[key[0]] = given_key
                else:
                    raise BadInputError(f"{label}: field 'key' must be an object with {', '.join(key)}")
            if kv:
                for k, v in kv.items():
                    if k in row and row[k] != v:
                        raise BadInputError(f"{label}: key field {k!r} is {v!r} in 'key' but {row[k]!r} in 'row'")
                    row[k] = v
        else:
            row = {k: v for k, v in ch.items() if k not in ENVELOPE}
        for k in key:
            if row.get(k) is None:
                raise BadInputError(f"{label}: missing key field {k!r}")
        for name in row:
            if not isinstance(name, str) or not name or "." in name:
                raise BadInputError(f"{label}: invalid field name {name!r} (non-empty, no '.')")
            if name in RESERVED:
                raise BadInputError(f"{label}: field name {name!r} is reserved for the change log")
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise BadInputError(f"{label}: invalid field name {name!r} (not valid Unicode)") from None
        _check_values(row, label)
        if op == "delete":
            row = {k: row[k] for k in key}
        out.append(Change(op, ts, int(seq), row, label))
    return out


# -- typing values ------------------------------------------------------------------------------
def _family(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return "time"
    if pa.types.is_null(t):
        return "null"
    return "nested"


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    """Casts we accept silently: numeric widening/narrowing that arrow checks, ISO text to times."""
    a, b = _family(src), _family(dst)
    return a == "null" or a == b or (a == "string" and b == "time")


def _describe(t: pa.DataType) -> str:
    return str(t).replace("large_", "")


def _to_type(values: list[Any], target: pa.DataType, field: str, labels: list[str]) -> pa.Array:
    """Cast one column to `target`; on failure name the first change whose value does not fit."""
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        arr = None
    if arr is not None and _castable(arr.type, target):
        try:
            return arr.cast(target) if arr.type != target else arr
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass
    for v, label in zip(values, labels, strict=True):
        if v is None:
            continue
        try:
            one = pa.array([v])
            ok = _castable(one.type, target)
            if ok:
                one.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError):
            ok = False
        if not ok:
            raise BadInputError(f"{label}: field {field!r} value {v!r} cannot be cast to the collection's type {_describe(target)}")
    raise BadInputError(f"field {field!r}: values cannot be cast to the collection's type {_describe(target)}")


def _infer(values: list[Any], field: str, labels: list[str]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        first = next((v for v in values if v is not None), None)
        for v, label in zip(values, labels, strict=True):
            if v is not None and type(v) is not type(first):
                raise BadInputError(
                    f"{label}: field {field!r} is {type(v).__name__} but earlier changes gave {type(first).__name__}"
                ) from None
        raise BadInputError(f"field {field!r}: cannot store these values ({e})") from None


def _key_kind(t: pa.DataType) -> type:
    if pa.types.is_integer(t):
        return int
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return str
    raise BadInputError(f"key columns must be integers or text, the collection has {_describe(t)}")


def build_batch(
    changes: Sequence[Change],
    key: Sequence[str],
    known: Mapping[str, pa.DataType],
    ids: Sequence[str] | None = None,
) -> pa.Table:
    """The log batch: `_id, _op, _key, _ts, _seq`, the key columns, then the row columns.

    `known` holds the collection's current column types: values are cast to them (or refused);
    new columns get the type Arrow infers, and all-null new columns are left out.
    """
    n = len(changes)
    ids = list(ids) if ids is not None else new_ids(n)
    labels = [c.label for c in changes]
    cols: dict[str, pa.Array] = {}
    for k in key:
        values = [c.row[k] for c in changes]
        kind = _key_kind(known[k]) if k in known else type(values[0]) if values else str
        if kind not in (int, str):
            raise BadInputError(f"{labels[0]}: key field {k!r} must be an integer or text, got {type(values[0]).__name__}")
        for v, label in zip(values, labels, strict=True):
            if type(v) is not kind:
                raise BadInputError(
                    f"{label}: key field {k!r} is {type(v).__name__} {v!r} but the collection's key is {kind.__name__}"
                )
        try:
            cols[k] = pa.array(values, type=known.get(k, pa.int64() if kind is int else pa.string()))
        except (pa.ArrowInvalid, OverflowError) as e:
            raise BadInputError(f"key field {k!r}: {e}") from None
    names: dict[str, None] = {}
    for c in changes:
        for name in c.row:
            if name not in key:
                names.setdefault(name)
    for name in names:
        values = [c.row.get(name) for c in changes]
        if name in known:
            cols[name] = _to_type(values, known[name], name, labels)
        else:
            arr = _infer(values, name, labels)
            if pa.types.is_null(arr.type):
                continue
            cols[name] = arr
    meta = [
        pa.array(ids, pa.string()),
        pa.array([c.op for c in changes], pa.string()),
        key_column([cols[k] for k in key]),
        pa.array([c.ts for c in changes], TS),
        pa.array([c.seq for c in changes], pa.int64()),
    ]
    table = pa.Table.from_arrays(meta, schema=LOG_META)
    for name, arr in cols.items():
        table = table.append_column(pa.field(name, arr.type, nullable=name not in key), arr)
    return table


def batch_from_arrow(changes: pa.Table, key: Sequence[str], known: Mapping[str, pa.DataType], ids: Sequence[str] | None = None) -> pa.Table:
    """Vectorised `parse_changes` + `build_batch` for an Arrow table of flat changes.

    Columns: `op`, optional `ts` (timestamp, epoch ms or ISO text; default now) and `seq`, the key
    columns and the row columns. Errors name the first offending row.
    """
    n = changes.num_rows
    names = changes.column_names
    if "op" not in names:
        raise BadInputError("Arrow changes: missing column 'op'")
    op = changes.column("op").cast(pa.string())
    bad = pc.invert(pc.fill_null(pc.is_in(op, value_set=pa.array(OPS)), False))
    if pc.any(bad).as_py():
        i = pc.index(bad, True).as_py()
        raise BadInputError(f"row {i + 1}: field 'op' must be one of {', '.join(OPS)}, got {op[i].as_py()!r}")
    if "ts" in names:
        ts = pc.fill_null(ts_to_utc(changes.column("ts"), "Arrow changes"), pa.scalar(datetime.now(UTC), TS))
    else:
        ts = pa.array([datetime.now(UTC)] * n, TS)
    seq = changes.column("seq").cast(pa.int64()) if "seq" in names else pa.array([0] * n, pa.int64())
    seq = pc.fill_null(seq, 0)
    cols: dict[str, Any] = {}
    for k in key:
        if k not in names:
            raise BadInputError(f"Arrow changes: missing key column {k!r}")
        col = changes.column(k)
        if col.null_count:
            i = pc.index(pc.is_null(col), True).as_py()
            raise BadInputError(f"row {i + 1}: missing key field {k!r}")
        want = known.get(k)
        kind = _key_kind(want) if want is not None else _key_kind(col.type)
        if _key_kind(col.type) is not kind:
            raise BadInputError(f"key field {k!r} is {_describe(col.type)} but the collection's key is {kind.__name__}")
        cols[k] = col.cast(want) if want is not None else col
    is_delete = pc.equal(op, "delete")
    for name in names:
        if name in ENVELOPE or name in key:
            continue
        if name in RESERVED or "." in name or not name:
            raise BadInputError(f"Arrow changes: invalid or reserved column name {name!r}")
        col = changes.column(name)
        if name in known:
            target = known[name]
            if not _castable(col.type, target):
                raise BadInputError(f"field {name!r}: {_describe(col.type)} values cannot be cast to the collection's type {_describe(target)}")
            try:
                col = col.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise BadInputError(f"field {name!r}: cannot be cast to {_describe(target)}: {e}") from None
        elif pa.types.is_null(col.type):
            continue
        cols[name] = pc.if_else(is_delete, pa.nulls(n, col.type), col)
    meta = [
        pa.array(list(ids) if ids is not None else new_ids(n), pa.string()),
        op,
        key_column([cols[k] for k in key]),
        ts,
        seq,
    ]
    table = pa.Table.from_arrays(meta, schema=LOG_META)
    for name, arr in cols.items():
        table = table.append_column(pa.field(name, arr.type, nullable=name not in key), arr)
    return table
