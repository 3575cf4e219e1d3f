"""Event-id deduplication across batches: which rows are later copies, for compaction and for a view.

Webhook sources deliver at least once, so the same event (same `id`) can arrive again minutes or
hours later, in another batch. A table opts in with two table properties (the contract shared
with the ingest path, which drops duplicates *within* a batch before it commits):

    icebergdo.dedupe         = "id"     the column that identifies an event
    icebergdo.dedupe.window  = "24h"    how far apart two arrivals may be to count as one (default 24h)

The rule, applied identically by compaction (`duplicates`) and by the `<table>_dedup` DuckDB view
(`view_sql`), so a query gives the same rows before and after compaction:

- Rows are compared within one partition of the table (for `events.raw`, one hour of `ts`):
  copies whose `ts` fall in different partitions are different events.
- Arrival order is `ingested_at`, then file order (the file's name without the `_compact-`
  prefix: a ULID, so the order files were written), then the row's position in its file.
- A row is a duplicate, and removed, when the previous arrival of the same id in its partition
  arrived at most `window` before it. The first arrival always stays; a copy arriving more than
  `window` after the previous one is kept as a new event.
- Rows whose id or `ingested_at` is null are never duplicates.

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

from icebergdo.errors import ConfigError
from icebergdo.maintenance.common import parse_duration, table_name

DEDUPE_PROPERTY = "icebergdo.dedupe"
WINDOW_PROPERTY = "icebergdo.dedupe.window"
DEFAULT_WINDOW = "24h"
ARRIVAL_COLUMN = "ingested_at"
COMPACT_PREFIX = "_compact-"
VIEW_SUFFIX = "_dedup"


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
    column = (table.properties.get(DEDUPE_PROPERTY) or "").strip()
    if not column:
        return None
    name = table_name(table)
    names = table.schema().column_names
    if column not in names:
        raise ConfigError(f"{name}: table property {DEDUPE_PROPERTY} = {column!r} names no column (columns: {', '.join(names)})")
    if ARRIVAL_COLUMN not in names:
        raise ConfigError(f"{name}: {DEDUPE_PROPERTY} needs an {ARRIVAL_COLUMN!r} column to tell the first arrival")
    window = table.properties.get(WINDOW_PROPERTY, DEFAULT_WINDOW)
    try:
        seconds = parse_duration(window, where=f"{name}: table property {WINDOW_PROPERTY}")
    except Exception as e:  # noqa: BLE001 - BadInputError from the parser: this is configuration
        raise ConfigError(str(e)) from None
    if seconds < 0:
        raise ConfigError(f"{name}: table property {WINDOW_PROPERTY} must not be negative")
    return DedupeSpec(column, seconds)


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
    t = pa.table({"k": keys, "a": arrival, "f": files, "r": rows})
    idx = pc.sort_indices(t, [(c, "ascending", "at_end") for c in ("k", "a", "f", "r")])
    s = t.take(idx)
    k, a = s.column("k").combine_chunks(), s.column("a").combine_chunks().cast(pa.int64())
    same = pc.and_(pc.equal(k.slice(1), k.slice(0, n - 1)), pc.is_valid(a.slice(0, n - 1)))
    close = pc.less_equal(pc.subtract(a.slice(1), a.slice(0, n - 1)), window_us)
    later = pc.fill_null(pc.and_(same, close), False)  # a null id or arrival is never a duplicate
    drop_sorted = pa.concat_arrays([pa.array([False]), later])
    return pc.take(drop_sorted, pc.sort_indices(idx))  # back to input positions: row idx[i] gets drop_sorted[i]


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


def view_sql(table: Table, location: str) -> str | None:
    """A DuckDB SELECT over `iceberg_scan(location)` with the later copies removed (the rule above).

    None when the table does not dedupe, or its partition spec has no DuckDB equivalent.
    """
    spec = spec_of(table)
    parts = _partition_sql(table)
    if spec is None or parts is None:
        return None
    k, a = _ident(spec.column), _ident(spec.arrival)
    loc = location.replace("'", "''")
    partition_by = ", ".join([k, *parts])
    order = f"{a}, regexp_replace(_icebergdo_file, '^.*/({COMPACT_PREFIX})?', ''), _icebergdo_row"
    return (
        f"WITH _icebergdo_rows AS (SELECT *, filename AS _icebergdo_file, file_row_number AS _icebergdo_row FROM iceberg_scan('{loc}')) "
        f"SELECT * EXCLUDE (_icebergdo_file, _icebergdo_row, _icebergdo_prev) FROM ("
        f"SELECT *, lag({a}) OVER (PARTITION BY {partition_by} ORDER BY {order}) AS _icebergdo_prev "
        f"FROM _icebergdo_rows WHERE {k} IS NOT NULL AND {a} IS NOT NULL"
        f") WHERE _icebergdo_prev IS NULL OR epoch_us({a}) - epoch_us(_icebergdo_prev) > {spec.window_us} "
        f"UNION ALL SELECT * EXCLUDE (_icebergdo_file, _icebergdo_row) FROM _icebergdo_rows WHERE {k} IS NULL OR {a} IS NULL"
    )
