"""Event-id deduplication across batches: which rows are later copies, for compaction and for a view.

Webhook sources deliver at least once, so the same event (same `id`) can arrive again minutes or
hours later, in another batch. A table opts in with the table properties of `icebergdo.dedupe`
(`icebergdo.dedupe` = the id column, `icebergdo.dedupe.window` = e.g. `24h`; `lh.set_dedupe`),
whose ingest path drops repeats *within* a batch before it commits. This module is the other
half: repeats *across* batches, by the same rule, applied identically by compaction
(`duplicates`) and by the de-duplicated DuckDB view (`view_sql`), so a query gives the same rows
before and after compaction:

- Rows are compared within one partition of the table (for `events.raw`, one hour of `ts`):
  copies whose `ts` fall in different partitions are different events.
- Arrival order is `ingested_at`, then file order (the file's name without the `_compact-`
  prefix: a ULID, so the order files were written), then the row's position in its file.
- The first arrival of an id always stays. A later copy is removed when it arrived at most
  `window` after that first arrival; one arriving later than that is kept as a new event.
- Rows whose id is null are never duplicates; a copy without an `ingested_at` is one.

Compaction removes duplicates from every partition it rewrites (`compact.py`): the key columns of
*all* files of the partition are read, the later copies dropped from the rewritten files, and a
file outside the rewrite that holds a later copy is rewritten too. Until a partition is compacted
its duplicates are in storage, and the view hides them.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform, HourTransform, IdentityTransform, MonthTransform, YearTransform

from icebergdo.dedupe import Dedupe
from icebergdo.errors import ConfigError, IcebergdoError
from icebergdo.maintenance.common import table_name

ARRIVAL_COLUMN = "ingested_at"
COMPACT_PREFIX = "_compact-"
VIEW_SUFFIX = "_dedup"
_NO_ARRIVAL = 2**63 - 1  # stands in for a first arrival without a time, so it is never carried into the next id


@dataclass(frozen=True)
class DedupeSpec:
    """A table's dedupe settings: the id column, the window in seconds, the arrival-time column."""

    column: str
    window_s: float
    arrival: str = ARRIVAL_COLUMN

    @property
    def window_us(self) -> int:
        return int(round(self.window_s * 1_000_000))


def spec_of(table: Table) -> DedupeSpec | None:
    """The table's dedupe settings, or None when `icebergdo.dedupe` is not set; ConfigError names a bad one."""
    name = table_name(table)
    try:
        setting = Dedupe.of(table.properties)
    except IcebergdoError as e:
        raise ConfigError(f"{name}: {e}") from None
    if setting is None:
        return None
    names = table.schema().column_names
    if setting.column not in names:
        raise ConfigError(f"{name}: table property icebergdo.dedupe = {setting.column!r} names no column (columns: {', '.join(names)})")
    if ARRIVAL_COLUMN not in names:
        raise ConfigError(f"{name}: icebergdo.dedupe needs an {ARRIVAL_COLUMN!r} column to tell the first arrival")
    return DedupeSpec(setting.column, setting.window.total_seconds())


def file_order(path: str) -> str:
    """A data file's place in arrival order: its name without the compaction prefix (a ULID)."""
    base = posixpath.basename(path)
    return base[len(COMPACT_PREFIX):] if base.startswith(COMPACT_PREFIX) else base


def duplicates(
    keys: pa.Array | pa.ChunkedArray,
    arrival: pa.Array | pa.ChunkedArray,
    files: pa.Array | pa.ChunkedArray,
    rows: pa.Array | pa.ChunkedArray,
    window_us: int,
) -> pa.Array:
    """For the rows of ONE partition: a boolean array, True where the row is a later copy to remove.

    `files` is each row's `file_order` and `rows` its position in that file: together with
    `arrival` they give the arrival order.
    """
    n = len(keys)
    if n < 2:
        return pa.array([False] * n, pa.bool_())
    t = pa.table({"k": keys, "a": pc.cast(arrival, pa.int64()), "f": files, "r": rows})
    idx = pc.sort_indices(t, [(c, "ascending", "at_end") for c in ("k", "a", "f", "r")])
    s = t.take(idx)
    k, a = s.column("k").combine_chunks(), s.column("a").combine_chunks()
    first = pa.concat_arrays([pa.array([True]), pc.fill_null(pc.not_equal(k.slice(1), k.slice(0, n - 1)), True)])
    # Each id's first arrival, carried down its (contiguous) group of copies.
    firsts = pc.fill_null_forward(pc.if_else(first, pc.fill_null(a, _NO_ARRIVAL), pa.scalar(None, pa.int64())))
    within = pc.fill_null(pc.less_equal(pc.subtract(a, firsts), window_us), True)  # no arrival time: a copy
    drop = pc.and_(pc.and_(pc.invert(first), k.is_valid()), within)
    return pc.take(drop, pc.sort_indices(idx))  # back to input positions: row idx[i] gets drop[i]


def _partition_sql(table: Table) -> list[str] | None:
    """DuckDB expressions for the table's partition values (UTC, like Iceberg), or None if one has no equivalent."""
    schema = table.schema()
    out = []
    for pf in table.spec().fields:
        col = schema.find_column_name(pf.source_id)
        if col is None:
            return None
        c = _ident(col)
        tr = pf.transform
        if isinstance(tr, IdentityTransform):
            out.append(c)
        elif isinstance(tr, HourTransform):
            out.append(f"floor(epoch_us({c}) / 3600000000.0)")
        elif isinstance(tr, DayTransform):
            out.append(f"floor(epoch_us({c}) / 86400000000.0)")
        elif isinstance(tr, MonthTransform):
            out.append(f"(year(make_timestamp(epoch_us({c}))) * 12 + month(make_timestamp(epoch_us({c}))))")
        elif isinstance(tr, YearTransform):
            out.append(f"year(make_timestamp(epoch_us({c})))")
        else:
            return None  # bucket, truncate: no DuckDB equivalent here
    return out


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def view_sql(table: Table, source: str) -> str | None:
    """A DuckDB SELECT over `source` (`iceberg_scan('...')` or an attached table) without the later copies.

    `source` must offer DuckDB's `filename` and `file_row_number` columns (both do). None when the
    table does not dedupe, or its partition spec has no DuckDB equivalent.
    """
    spec = spec_of(table)
    parts = _partition_sql(table)
    if spec is None or parts is None:
        return None
    k, a = _ident(spec.column), _ident(spec.arrival)
    window = f"PARTITION BY {', '.join([k, *parts])} ORDER BY {a} NULLS LAST, regexp_replace(_icebergdo_file, '^.*/({COMPACT_PREFIX})?', ''), _icebergdo_row"
    return (
        f"WITH _icebergdo_rows AS (SELECT *, filename AS _icebergdo_file, file_row_number AS _icebergdo_row FROM {source}) "
        f"SELECT * EXCLUDE (_icebergdo_file, _icebergdo_row, _icebergdo_n, _icebergdo_first) FROM ("
        f"SELECT *, row_number() OVER w AS _icebergdo_n, first_value({a}) OVER w AS _icebergdo_first "
        f"FROM _icebergdo_rows WHERE {k} IS NOT NULL WINDOW w AS ({window})"
        f") WHERE _icebergdo_n = 1 OR epoch_us({a}) - epoch_us(_icebergdo_first) > {spec.window_us} "
        f"UNION ALL SELECT * EXCLUDE (_icebergdo_file, _icebergdo_row) FROM _icebergdo_rows WHERE {k} IS NULL"
    )


def view_name(table: str) -> str:
    """The de-duplicated view of `table` in the connection's own schema: `events_dedup`, `shop_orders_dedup`."""
    return ("events" if table == "events.raw" else table.replace(".", "_")) + VIEW_SUFFIX
