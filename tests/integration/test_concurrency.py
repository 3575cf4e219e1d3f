"""Many writer processes appending to one table through a shared catalog: every batch exactly once."""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from pathlib import Path

import pyarrow as pa
import pytest

from icebergdo import Lakehouse, commit
from icebergdo.config import Config
from tests.conftest import make_config

TABLE = "load.appends"
SCHEMA = pa.schema([pa.field("writer", pa.int32()), pa.field("seq", pa.int32()), pa.field("n", pa.int32())])
ROWS_PER_BATCH = 3


def _writer(config: Config, writer: int, appends: int, start: object, out: object) -> None:
    """One process: `appends` commits of ROWS_PER_BATCH rows, each tagged (writer, seq)."""
    try:
        lh = Lakehouse.open(config)
        start.wait(60)  # type: ignore[attr-defined]
        for seq in range(appends):
            batch = pa.table(
                {"writer": [writer] * ROWS_PER_BATCH, "seq": [seq] * ROWS_PER_BATCH, "n": list(range(ROWS_PER_BATCH))},
                schema=SCHEMA,
            )
            lh.append(TABLE, batch, snapshot_properties={commit.WRITER_ID: f"w{writer}"})
        out.put((writer, "ok", commit.stats()))  # type: ignore[attr-defined]
    except BaseException as e:  # report, don't hang the parent
        out.put((writer, "error", repr(e)))  # type: ignore[attr-defined]


def _drain(out: object, results: list) -> bool:
    """Pick up reports that raced with the liveness check; False if a dead writer never reported."""
    before = len(results)
    while True:
        try:
            results.append(out.get(timeout=0.5))  # type: ignore[attr-defined]
        except queue.Empty:
            return len(results) > before


def run_writers(config: Config, writers: int, appends: int, timeout: float = 240) -> list[dict[str, int]]:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(config, w, appends, start, out)) for w in range(writers)]
    for p in procs:
        p.start()
    start.set()
    results = []
    deadline = time.monotonic() + timeout
    try:
        while len(results) < len(procs):
            try:
                results.append(out.get(timeout=1))
            except queue.Empty:
                exited = sum(not p.is_alive() for p in procs)
                assert exited <= len(results) or _drain(out, results), "a writer process died without reporting"
                assert time.monotonic() < deadline, f"writers did not finish within {timeout}s"
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join(5)
    errors = [r for r in results if r[1] != "ok"]
    assert not errors, errors
    return [r[2] for r in results]


@pytest.mark.slow
@pytest.mark.parametrize(("backend_name", "writers"), [("s3pg", 8), ("local", 4)])
def test_many_writers_every_batch_exactly_once(
    request: pytest.FixtureRequest, tmp_path: Path, backend_name: str, writers: int
) -> None:
    appends = 20
    config = make_config(request, backend_name, tmp_path)
    lh = Lakehouse.open(config)
    lh.create_table(TABLE, SCHEMA, data_path="load/appends")
    stats = run_writers(config, writers, appends)

    con = lh.duckdb()
    total, batches = con.execute("SELECT count(*), count(DISTINCT (writer, seq)) FROM load.appends").fetchone()
    assert (total, batches) == (writers * appends * ROWS_PER_BATCH, writers * appends)
    dupes = con.execute(
        "SELECT writer, seq, count(*) c FROM load.appends GROUP BY ALL HAVING c <> ?", [ROWS_PER_BATCH]
    ).fetchall()
    assert dupes == []
    table = lh.table(TABLE)
    assert len(commit.committed_batch_ids(table)) == writers * appends
    writer_ids = {s.summary.additional_properties.get(commit.WRITER_ID) for s in table.metadata.snapshots}
    assert writer_ids == {f"w{w}" for w in range(writers)}
    assert sum(s.get("commits", 0) for s in stats) == writers * appends


def test_replayed_batch_id_is_not_committed_twice(lh: Lakehouse) -> None:
    lh.create_table(TABLE, SCHEMA, data_path="load/appends")
    batch = pa.table({"writer": [1, 1], "seq": [7, 7], "n": [0, 1]}, schema=SCHEMA)
    first = lh.append(TABLE, batch, snapshot_properties={commit.BATCH_ID: "01JREPLAY0000000000000000A"})
    again = lh.append(TABLE, batch, snapshot_properties={commit.BATCH_ID: "01JREPLAY0000000000000000A"})
    assert again.snapshot_id == first.snapshot_id
    other = lh.append(TABLE, batch)  # a fresh batch id: a new commit
    assert other.snapshot_id != first.snapshot_id
    assert lh.query("SELECT count(*) AS n FROM load.appends").to_pylist() == [{"n": 4}]
    ids = commit.committed_batch_ids(lh.table(TABLE))
    assert "01JREPLAY0000000000000000A" in ids and len(ids) == 2
    newest = max(s.timestamp_ms for s in lh.table(TABLE).metadata.snapshots)
    assert commit.committed_batch_ids(lh.table(TABLE), since_ms=newest + 1) == set()


def test_commit_lock_excludes_a_second_writer(lh: Lakehouse) -> None:
    """The per-table lock (PostgreSQL advisory lock / SQLite flock) makes a second writer wait."""
    import threading

    lh.create_table(TABLE, SCHEMA, data_path="load/appends")
    lock = commit.commit_lock(lh.catalog, TABLE, timeout_s=0.4)
    other_table = commit.commit_lock(lh.catalog, "load.other", timeout_s=0.4)
    seen: dict[str, float] = {}

    def contender() -> None:
        started = time.monotonic()
        with lock():
            seen["waited_s"] = time.monotonic() - started
        started = time.monotonic()
        with other_table() as waited:
            seen["other_s"] = time.monotonic() - started
            seen["other_waited"] = waited

    with lock() as waited:
        assert waited is False  # free: taken at once
        t = threading.Thread(target=contender)
        t.start()
        t.join(10)
    assert seen["waited_s"] >= 0.35  # held off until its lock timeout
    assert seen["other_s"] < 0.3 and seen["other_waited"] is False  # another table is not blocked
    with lock() as waited:  # released: free again
        assert waited is False


def test_data_files_upload_while_another_writer_holds_the_commit_lock(lh: Lakehouse) -> None:
    """The commit lock covers the metadata commit only: a writer waiting for it has already written
    and uploaded its data files, so writers upload in parallel and queue only for the short commit."""
    import threading

    from icebergdo.iceberg import datafiles

    lh.create_table(TABLE, SCHEMA, data_path="load/appends")
    uploaded = threading.Event()
    real = datafiles.write_append

    def spy(table, batch, *rest):  # type: ignore[no-untyped-def]
        prepared = real(table, batch, *rest)
        uploaded.set()
        return prepared

    batch = pa.table({"writer": [1] * 3, "seq": [0] * 3, "n": [0, 1, 2]}, schema=SCHEMA)
    result: dict[str, object] = {}
    datafiles.write_append = spy  # type: ignore[assignment]
    try:
        with commit.commit_lock(lh.catalog, TABLE, timeout_s=60)() as waited:
            assert waited is False
            t = threading.Thread(target=lambda: result.setdefault("r", lh.append(TABLE, batch)))
            t.start()
            assert uploaded.wait(60), "the data files were not written while the lock was held"
            time.sleep(0.3)
            assert "r" not in result and t.is_alive()  # ... but the commit waits for the lock
        t.join(60)
    finally:
        datafiles.write_append = real  # type: ignore[assignment]
    assert "r" in result
    assert lh.query("SELECT count(*) AS n FROM load.appends").to_pylist() == [{"n": 3}]


def _durable_writer(config: Config, k: int, flushes: int, per_flush: int, state: str, start: object, done: object, out: object) -> None:
    """One process: a durable writer (default WAL folder) committing `flushes` batches of events.

    It keeps its WAL folder until every writer has committed (`done`, a barrier): a writer that
    closed first would free its folder, and a later one would reuse it (and its writer id) by design."""
    import os

    os.environ["XDG_STATE_HOME"] = state
    try:
        lh = Lakehouse.open(config)
        start.wait(60)  # type: ignore[attr-defined]
        with lh.writer(durable=True, max_age=60) as w:
            for f in range(flushes):
                w.extend([{"id": f"w{k}-{f}-{i}", "ts": 1772359200000 + (f * per_flush + i) * 1000, "type": "webhook",
                           "payload": {"k": k}} for i in range(per_flush)])
                w.flush()
            done.wait(120)  # type: ignore[attr-defined]
        out.put((k, "ok", w.writer_id, w.stats().commits))  # type: ignore[attr-defined]
    except BaseException as e:  # report, don't hang the parent
        out.put((k, "error", repr(e), 0))  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize(("backend_name", "writers"), [("s3pg", 3), ("local", 2)])
def test_durable_writer_processes_every_batch_exactly_once(
    request: pytest.FixtureRequest, tmp_path: Path, backend_name: str, writers: int
) -> None:
    from icebergdo import ledger

    flushes, per_flush = 6, 50
    config = make_config(request, backend_name, tmp_path)
    lh = Lakehouse.open(config)
    lh.events_table()
    ctx = mp.get_context("spawn")
    start, done, out = ctx.Event(), ctx.Barrier(writers), ctx.Queue()
    procs = [ctx.Process(target=_durable_writer, args=(config, k, flushes, per_flush, str(tmp_path / "state"), start, done, out))
             for k in range(writers)]
    for p in procs:
        p.start()
    start.set()
    try:
        results = [out.get(timeout=300) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert all(r[1] == "ok" for r in results), results
    total, distinct = lh.duckdb().execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()
    assert total == distinct == writers * flushes * per_flush
    props = lh.events_table().metadata.properties
    assert {r[2]: ledger.committed_upto(props, r[2]) for r in results} == {r[2]: flushes for r in results}
    assert all(r[3] == flushes for r in results)
    assert len(commit.committed_batch_ids(lh.events_table())) == writers * flushes
