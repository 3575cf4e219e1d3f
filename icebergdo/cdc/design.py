"""How a CDC collection is laid out as two Iceberg tables, and the Arrow schema helpers both share.

    {namespace}.{name}__deltas   the log: `_id, _op, _key, _ts, _seq` + the row after the change,
                                 partitioned by day(_ts) → {warehouse}/{ns}/{name}/deltas/YYYY/MM/DD/
    {namespace}.{name}           the current state: one row per live key + its version `_ts, _seq, _id`,
                                 partitioned by bucket(N, key) → {warehouse}/{ns}/{name}/data/
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from icebergdo.cdc.changes import (
    RESERVED,
)
from icebergdo.errors import (
    BadInputError,
    StorageError,
)

log = logging.getLogger(__name__)

P_ROLE = "icebergdo.cdc.role"
P_KEY = "icebergdo.cdc.key"
P_BUCKETS = "icebergdo.cdc.buckets"
P_FOLDED = "icebergdo.cdc.folded-log-snapshot-id"
P_CHANGES = "icebergdo.cdc.changes"
LOG_SUFFIX = "__deltas"
DEFAULT_KEY = ("id",)
DEFAULT_BUCKETS = 16
FOLD_ATTEMPTS = 30
TAG_PREFIX = "snapshot-"
# Copy-on-write and serializable validation: a concurrent fold that added or replaced files
# makes ours fail validation (and be recomputed) instead of duplicating a key.
STATE_PROPERTIES = {
    "write.delete.mode": "copy-on-write",
    "write.update.mode": "copy-on-write",
    "write.merge.mode": "copy-on-write",
    "write.delete.isolation-level": "serializable",
    "write.update.isolation-level": "serializable",
}
# -- arrow schema helpers ------------------------------------------------------------------------
def small_type(t: pa.DataType) -> pa.DataType:
    """pyiceberg reads large_* types; folds join and compare, so use one flavour everywhere."""
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return pa.list_(small_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(small_type(f.type)) for f in t])
    if pa.types.is_map(t):
        return pa.map_(small_type(t.key_type), small_type(t.item_type))
    return t


def arrow_schema(schema: Schema) -> pa.Schema:
    s = schema_to_pyarrow(schema, include_field_ids=False)
    return pa.schema([f.with_type(small_type(f.type)) for f in s])


def conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """Select/cast `table`'s columns into `target` (missing columns become nulls)."""
    cols = []
    for f in target:
        if f.name in table.column_names:
            col = table.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=target)


def micros(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def millis(ts: datetime) -> int:
    return micros(ts) // 1000


def evolve(table: Table, fields: Sequence[pa.Field]) -> Table:
    """Add top-level columns the table lacks (schema union); concurrent adds of the same column are fine."""
    for attempt in range(10):
        have = {f.name for f in table.schema().fields}
        new = [f.with_nullable(True) for f in fields if f.name not in have]
        if not new:
            return table
        try:
            with table.update_schema() as upd:
                upd.union_by_name(pa.schema(new))
            return table
        except CommitFailedException:
            time.sleep(0.02 * (attempt + 1))
            table.refresh()
    raise StorageError(f"{'.'.join(table.name())}: could not evolve the schema (concurrent schema changes)")


def row_schema(schema: pa.Schema | Schema, key: Sequence[str]) -> pa.Schema:
    s = arrow_schema(schema) if isinstance(schema, Schema) else schema
    if not isinstance(s, pa.Schema):
        raise BadInputError(f"schema must be a pyarrow.Schema or pyiceberg Schema, got {type(schema).__name__}")
    bad = [n for n in s.names if n in RESERVED]
    if bad:
        raise BadInputError(f"schema uses reserved column name(s) {bad}")
    return pa.schema([f.with_type(small_type(f.type)) for f in s])

