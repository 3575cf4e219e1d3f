"""The append fast path: contiguous partitions become slices; anything else takes pyiceberg's own path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from icebergdo import Lakehouse
from icebergdo.errors import StorageError
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


def _copy_out(table, path: str, folder) -> str:  # noqa: ANN001
    """A data file copied to a local path through the table's FileIO (local or S3 alike)."""
    local = folder / path.rsplit("/", 1)[-1]
    with table.io.new_input(path).open() as f:
        local.write_bytes(f.read())
    return str(local)


def _column_encodings(path: str) -> dict[str, set[str]]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    out: dict[str, set[str]] = {}
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            col = meta.row_group(g).column(c)
            out.setdefault(col.path_in_schema, set()).update(col.encodings)
    return out


def test_events_files_skip_dictionaries_only_where_values_are_distinct(lh: Lakehouse, tmp_path) -> None:  # noqa: ANN001
    """`id`, `payload` and `ts` are written plain (their values are nearly all distinct); the other
    columns keep dictionary encoding; DuckDB reads every row back either way."""
    events = batch([0, 0, 1, 1, 2] * 400)
    lh.append_events(events)
    table = lh.table("events.raw")
    assert table.properties[datafiles.DICTIONARY_EXCLUDE_PROPERTY] == "id,payload,ts"
    files = [t.file for t in table.scan().plan_files()]
    assert len(files) == 3
    enc = _column_encodings(_copy_out(table, files[0].file_path, tmp_path))
    for plain in ("id", "payload", "ts"):
        assert "RLE_DICTIONARY" not in enc[plain] and "PLAIN_DICTIONARY" not in enc[plain], (plain, enc[plain])
    assert "RLE_DICTIONARY" in enc["type"], enc["type"]
    got = lh.duckdb().execute("SELECT count(*), count(DISTINCT id), min(ts), max(ts) FROM events").fetchone()
    assert got == (2000, 2000, min(events.column("ts").to_pylist()), max(events.column("ts").to_pylist()))


def test_dictionary_exclusion_follows_the_table_property(lh: Lakehouse, tmp_path) -> None:  # noqa: ANN001
    """Set empty, the property gives every column its dictionary again (on any storage: the file is
    copied out through the table's FileIO)."""
    table = lh.events_table()
    with table.transaction() as tx:
        tx.set_properties({datafiles.DICTIONARY_EXCLUDE_PROPERTY: ""})
    lh.append_events(batch([0] * 1000))
    (f,) = [t.file for t in lh.table("events.raw").scan().plan_files()]
    enc = _column_encodings(_copy_out(lh.table("events.raw"), f.file_path, tmp_path))
    assert "RLE_DICTIONARY" in enc["id"] and "RLE_DICTIONARY" in enc["payload"], enc
    assert lh.duckdb().execute("SELECT count(DISTINCT id) FROM events").fetchone() == (1000,)


def test_files_are_encoded_at_most_one_per_core_and_a_failure_frees_its_slot(lh: Lakehouse, monkeypatch) -> None:  # noqa: ANN001
    """pyiceberg's pool has cores + 4 threads; encoding (CPU work, holding each file's gathered rows)
    runs in at most `usable_cores()` of them at once. A file that fails to encode gives its slot back:
    more failed appends than there are slots still leave the next append free to run."""
    import threading
    import time

    real_encode = datafiles.DataFileWriter.encode
    lock, state = threading.Lock(), {"now": 0, "peak": 0, "fail": False}

    def spied(self, task):  # noqa: ANN001, ANN202 - the real encode, counted; slowed so overlaps show
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        try:
            time.sleep(0.02)
            if state["fail"] and task.task_id == 2:
                raise OSError("injected: disk full")
            return real_encode(self, task)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(datafiles.DataFileWriter, "encode", spied)
    hours = [h for h in range(12) for _ in range(3)]  # 12 partitions: 12 files, 12 tasks at once
    state["fail"] = True
    for _ in range(datafiles.usable_cores() + 1):
        try:
            lh.append("events.raw", batch(hours))
        except StorageError as e:  # OSError counts as transient: retried, then reported with its outcome
            assert "disk full" in str(e) and "nothing was committed" in str(e)
        else:
            raise AssertionError("the injected failure did not fail the append")
    state["fail"] = False
    done = threading.Event()

    def append() -> None:
        lh.append("events.raw", batch(hours))
        done.set()

    threading.Thread(target=append, daemon=True).start()
    assert done.wait(60), "an append waited for encoding slots that failed writes never gave back"
    assert 2 <= state["peak"] <= datafiles.usable_cores() or datafiles.usable_cores() == 1
    table = lh.table("events.raw")
    assert sum(t.file.record_count for t in table.scan().plan_files()) == len(hours)  # the failed appends left nothing
    assert lh.duckdb().execute("SELECT count(*) FROM events").fetchone() == (len(hours),)
