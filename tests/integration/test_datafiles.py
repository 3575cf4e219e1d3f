"""The append fast path: contiguous partitions become slices; anything else takes pyiceberg's own path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from icebergdo import Lakehouse
from icebergdo.iceberg import datafiles
from icebergdo.schema import EVENT_PARTITION_SPEC, EVENT_SCHEMA, to_events

T0 = datetime(2026, 2, 1, tzinfo=UTC)


def batch(hours: list[int]) -> pa.Table:
    return to_events([{"ts": T0 + timedelta(hours=h, minutes=i % 60), "type": "t", "payload": {"i": i}} for i, h in enumerate(hours)])


def test_runs_are_contiguous_slices_or_none() -> None:
    runs = datafiles.partition_runs(EVENT_PARTITION_SPEC, EVENT_SCHEMA, batch([0, 0, 1, 1, 1, 3]))
    assert runs is not None
    assert [part.num_rows for _, part in runs] == [2, 3, 1]
    assert [key.to_path() for key, _ in runs] == ["ts_hour=2026-02-01-00", "ts_hour=2026-02-01-01", "ts_hour=2026-02-01-03"]
    assert datafiles.partition_runs(EVENT_PARTITION_SPEC, EVENT_SCHEMA, batch([0, 1, 0])) is None


def test_order_keeps_sorted_batches_and_sorts_others() -> None:
    sorted_batch = batch([0, 1, 2])
    assert datafiles.order(sorted_batch, "ts") is None  # nothing to move
    shuffled = batch([2, 0, 1])
    indices = datafiles.order(shuffled, "ts")
    assert indices is not None
    assert shuffled.take(indices).column("ts").to_pylist() == sorted(shuffled.column("ts").to_pylist())


def test_both_paths_commit_the_same_rows(lh: Lakehouse) -> None:
    contiguous, recurring = batch([0, 0, 1, 2, 2]), batch([5, 6, 5, 6])
    lh.append("events.raw", contiguous)  # fast path: one file per hour
    lh.append("events.raw", recurring)  # partitions recur: pyiceberg's own split
    table = lh.table("events.raw")
    files = [t.file for t in table.scan().plan_files()]
    assert len(files) == 5
    assert sorted(f.record_count for f in files) == [1, 2, 2, 2, 2]
    rows = lh.duckdb().execute("SELECT hour(ts AT TIME ZONE 'UTC') h, count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [(0, 2), (1, 1), (2, 2), (5, 2), (6, 2)]
