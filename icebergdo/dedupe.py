"""Event-id deduplication: the per-table property contract, and dropping duplicates within a batch.

Webhook sources (Stripe, GitHub, Shopify) deliver at least once, so the same event id arrives again
minutes or hours later. Deduplication is opt-in per table, by two table properties:

    icebergdo.dedupe          the column that identifies an event, e.g. `id`
    icebergdo.dedupe.window   how long after its first arrival a repeat counts as a duplicate, e.g. `24h`

(`lh.set_dedupe("events.raw", "id", window="24h")` sets both; `lh.set_dedupe("events.raw", None)`
switches it off.) The guarantee has two halves, both keeping the **first arrival** (the lowest
`ingested_at`; among equal ones, the earliest in the batch):

- **within one batch** (one commit: an `append_events` call, a writer flush, one batch of
  `icebergdo ingest`), repeats are dropped before the commit (`drop_duplicates`, here);
- **across batches**, repeats are removed no later than the compaction of their partition, and a
  de-duplicated view shows the data without them before that (maintenance, `docs/maintenance.md`).

A repeat that arrives later than `window` after the first arrival is kept: it is a new event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc

from icebergdo import arrays
from icebergdo.errors import BadInputError
from icebergdo.times import parse_duration

COLUMN_PROPERTY = "icebergdo.dedupe"
WINDOW_PROPERTY = "icebergdo.dedupe.window"
DEFAULT_WINDOW = "24h"


@dataclass(frozen=True)
class Dedupe:
    """A table's deduplication setting (from its properties)."""

    column: str
    window: timedelta

    @classmethod
    def of(cls, properties: Mapping[str, str]) -> Dedupe | None:
        """The setting in a table's properties, or None when deduplication is off."""
        column = (properties.get(COLUMN_PROPERTY) or "").strip()
        if not column:
            return None
        return cls(column, parse_duration(properties.get(WINDOW_PROPERTY) or DEFAULT_WINDOW, WINDOW_PROPERTY))

    def properties(self) -> dict[str, str]:
        return {COLUMN_PROPERTY: self.column, WINDOW_PROPERTY: f"{int(self.window.total_seconds())}s"}


def drop_duplicates(batch: pa.Table, setting: Dedupe) -> pa.Table:
    """The batch without repeats of `setting.column`: per value, the first arrival is kept.

    First arrival = lowest `ingested_at` (when the batch has it), then position in the batch. A
    repeat whose `ingested_at` is more than `window` after the first arrival's is kept. Rows with a
    null in the column are never duplicates. The order of the kept rows is unchanged.
    """
    if batch.num_rows < 2:
        return batch
    if setting.column not in batch.column_names:
        raise BadInputError(f"deduplication column {setting.column!r} is not in the batch (columns: {', '.join(batch.column_names)})")
    n = batch.num_rows
    pos = pa.array(range(n), pa.int64())
    cols = {"k": batch.column(setting.column), "pos": pos}
    order = [("k", "ascending"), ("pos", "ascending")]
    arrived = "ingested_at" in batch.column_names
    if arrived:
        cols["at"] = batch.column("ingested_at").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        order = [("k", "ascending"), ("at", "ascending"), ("pos", "ascending")]
    keyed = pa.table(cols)
    grouped = keyed.take(pc.sort_indices(keyed, order))
    k = grouped.column("k")
    same = pc.fill_null(pc.equal(k.slice(1), k.slice(0, n - 1)), False)
    starts = pc.invert(same)  # True where a new key begins (position 1..n-1)
    first = pa.concat_arrays([pa.array([True]), arrays.array(starts)])
    drop = pc.invert(first)
    if arrived:
        # the first arrival of each key, carried forward over its (contiguous) group
        at = arrays.array(grouped.column("at"))
        firsts = pc.fill_null_forward(pc.if_else(first, at, pa.scalar(None, pa.int64())))
        within = pc.less_equal(pc.subtract(at, firsts), int(setting.window.total_seconds() * 1_000_000))
        drop = pc.and_(drop, pc.fill_null(within, True))
    drop = pc.and_(drop, grouped.column("k").is_valid())
    if not pc.any(drop).as_py():
        return batch
    dropped = pc.filter(grouped.column("pos"), drop)
    keep = pc.invert(pc.is_in(pos, value_set=arrays.array(dropped)))
    return batch.filter(keep)
