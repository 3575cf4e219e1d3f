"""The buffered writer on both backends: thresholds, threads, WAL, exactly-once, backpressure, validation.

Results are checked through DuckDB (an independent reader), commit counts through snapshot summaries.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from icebergdo import BadInputError, Lakehouse, StorageError
from icebergdo.lakehouse import Lakehouse as LakehouseClass
from icebergdo.wal import WalLockedError, WriteAheadLog
from icebergdo.writer import BATCH_ID_PROPERTY, WRITER_ID_PROPERTY, BackpressureError, committed_batch_ids

pytestmark = pytest.mark.rest_backend  # also on the `rest` backend (tests/conftest.py)

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def event(i: int, prefix: str = "e", **extra: object) -> dict:
    return {"id": f"{prefix}-{i}", "ts": (T0 + timedelta(seconds=i)).isoformat(), "type": "webhook",
            "source": "test", "payload": {"i": i}, **extra}


def counts(lh: Lakehouse) -> tuple[int, int]:
    total, distinct = lh.query("SELECT count(*) AS n, count(DISTINCT id) AS d FROM events").to_pylist()[0].values()
    return total, distinct


def writer_snapshots(lh: Lakehouse) -> list:
    return [s for s in lh.events_table().snapshots() if s.summary[BATCH_ID_PROPERTY]]


def test_many_threads_few_commits(lh: Lakehouse) -> None:
    """8 producers × 10k events: all present once, commits ≤ ceil(events / max_rows) + age flushes."""
    producers, per_thread, max_rows = 8, 10_000, 10_000
    with lh.writer(max_rows=max_rows, max_age=60) as w:
        def produce(k: int) -> None:
            evs = [event(i, f"t{k}") for i in range(per_thread)]
            for e in evs[:200]:  # single appends racing with other threads' appends and extends
                w.append(e)
            for start in range(200, per_thread, 200):
                w.extend(evs[start:start + 200])

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    st = w.stats()
    total = producers * per_thread
    assert counts(lh) == (total, total)
    assert st.accepted == st.flushed == total and st.pending == 0
    assert 1 <= st.commits <= math.ceil(total / max_rows) + st.age_flushes
    assert len(writer_snapshots(lh)) == st.commits
    snap = writer_snapshots(lh)[-1]
    assert snap.summary[WRITER_ID_PROPERTY] == st.writer_id


def test_durable_group_commit(lh: Lakehouse, tmp_path) -> None:
    """Concurrent durable appends share fsyncs: fewer WAL syncs than events, all events committed."""
    with lh.writer(wal_dir=tmp_path / "wal", max_rows=10_000, max_age=60) as w:
        threads = [threading.Thread(target=lambda k=k: [w.append(event(i, f"g{k}")) for i in range(150)]) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        st = w.stats()
        assert st.accepted == 900 and st.flushed == 0
        assert 0 < st.wal_syncs < st.accepted
        assert sum(p.stat().st_size for p in (tmp_path / "wal").glob("*.arrow")) > 900 * 20
    assert counts(lh) == (900, 900)
    assert not list((tmp_path / "wal").glob("*.arrow"))


def test_one_file_per_partition_hour_and_stats_log(lh: Lakehouse, caplog: pytest.LogCaptureFixture) -> None:
    """One flush over three hours of events: one commit, three data files, one log line."""
    caplog.set_level(logging.INFO, logger="icebergdo.writer")
    evs = [event(i * 60) for i in range(180)]  # 3 hours, one event a minute
    with lh.writer(max_rows=1000, max_age=60) as w:
        w.extend(evs[:100])
        for e in evs[100:]:
            w.append(e)
        assert w.stats().pending == 180 and w.stats().commits == 0
    st = w.stats()
    assert (st.commits, st.files, st.flushed) == (1, 3, 180)
    assert st.last_commit_seconds is not None and st.last_error is None
    paths = [f.file.file_path for f in lh.events_table().scan().plan_files()]
    assert sorted(p.split("/events/")[1][:13] for p in paths) == ["2026/03/01/10", "2026/03/01/11", "2026/03/01/12"]
    assert counts(lh) == (180, 180)
    flush_lines = [r.getMessage() for r in caplog.records if "flushed 180 events" in r.getMessage()]
    assert len(flush_lines) == 1 and "3 file(s)" in flush_lines[0]


def test_age_trigger_flushes_in_background(lh: Lakehouse) -> None:
    w = lh.writer(max_rows=1000, max_age=0.3)
    try:
        for i in range(5):
            w.append(event(i))
        deadline = time.monotonic() + 20
        while w.stats().flushed < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        st = w.stats()
        assert st.flushed == 5 and st.age_flushes >= 1 and st.commits == 1
        assert counts(lh) == (5, 5)
    finally:
        w.close()


def test_bad_event_rejected_at_the_door(lh: Lakehouse) -> None:
    """A bad event fails its own append, naming the field; the buffered batch still commits."""
    with lh.writer(max_rows=1000, max_age=60) as w:
        w.extend([event(i) for i in range(10)])
        with pytest.raises(BadInputError, match="field 'ts'"):
            w.append({"ts": "yesterday-ish", "type": "webhook"})
        with pytest.raises(BadInputError, match="unknown field.*'colour'"):
            w.append(event(99, colour="red"))
        with pytest.raises(BadInputError, match="field 'type'"):
            w.extend([event(100), {"ts": 0}])  # all or none: event 100 is not accepted either
        w.append(event(10))
        assert w.stats().accepted == 11
    assert counts(lh) == (11, 11)


def test_arrow_fast_path_and_schema_evolution(lh: Lakehouse) -> None:
    """extend(pa.Table) is accepted as is; unknown='keep' adds a column, 'payload' folds it in."""
    n = 1000
    arrow = pa.table({
        "id": [f"a-{i}" for i in range(n)],
        "ts": pa.array([T0 + timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "type": ["rpc"] * n,
    })
    with lh.writer(max_rows=10_000, max_age=60) as w:
        assert w.extend(arrow) == n
    with lh.writer(max_rows=10_000, max_age=60, unknown="payload") as w:
        w.append(event(1, "p", country="NL"))
    with lh.writer(max_rows=10_000, max_age=60, unknown="keep") as w:
        w.append(event(2, "k", country="FR"))
    assert "country" in lh.events_table().schema().column_names
    con = lh.duckdb()
    assert con.execute("SELECT count(*) FROM events WHERE type = 'rpc'").fetchone()[0] == n
    assert con.execute("SELECT country FROM events WHERE id = 'k-2'").fetchone()[0] == "FR"
    assert con.execute("SELECT payload::JSON->>'country', country FROM events WHERE id = 'p-1'").fetchone() == ("NL", None)


def test_wal_is_locked_and_exactly_once_after_commit_before_delete(lh: Lakehouse, tmp_path, monkeypatch) -> None:
    """Crash between commit and segment deletion (WAL delete disabled): the replay skips the batch."""
    wal = tmp_path / "wal"
    monkeypatch.setattr(WriteAheadLog, "delete", lambda self, paths: None)  # fault: segments survive the commit
    with lh.writer(wal_dir=wal, max_rows=50, max_age=60) as w:
        with pytest.raises(WalLockedError, match="in use by another writer"):
            lh.writer(wal_dir=wal)
        for i in range(120):
            w.append(event(i))
    first_batches = committed_batch_ids(lh.events_table())
    assert len(first_batches) == w.stats().commits == 3
    assert len(list(wal.glob("*.arrow"))) == 3  # left behind by the fault
    monkeypatch.undo()
    with lh.writer(wal_dir=wal, max_rows=50, max_age=60) as w2:
        w2.append(event(500))
    st = w2.stats()
    assert (st.replayed_batches, st.skipped_batches, st.commits) == (3, 3, 1)
    assert st.writer_id == w.stats().writer_id  # the WAL folder keeps its writer id
    assert counts(lh) == (121, 121)
    assert not list(wal.glob("*.arrow"))


def test_store_down_backpressure_then_recovery(lh: Lakehouse, tmp_path, monkeypatch) -> None:
    """Commits fail (injected): append blocks then raises; nothing accepted is lost once the store is back."""
    down = threading.Event()
    down.set()
    real_append = LakehouseClass.append

    def flaky_append(self, *args, **kwargs):
        if down.is_set():
            raise StorageError("injected: object store unreachable")
        return real_append(self, *args, **kwargs)

    monkeypatch.setattr(LakehouseClass, "append", flaky_append)
    w = lh.writer(wal_dir=tmp_path / "wal", max_rows=100, max_pending_rows=300, max_age=60, block_timeout=1.0, close_timeout=0.5)
    for start in (0, 100, 200):  # three sealed batches that cannot be committed
        w.extend([event(i) for i in range(start, start + 100)])
    started = time.monotonic()
    with pytest.raises(BackpressureError, match="300 events behind.*injected: object store unreachable"):
        w.append(event(300))
    assert time.monotonic() - started >= 0.9
    st = w.stats()
    assert st.accepted == 300 and st.flushed == 0 and st.retries >= 1 and "injected" in st.last_error
    # close() cannot commit either: it reports, and the WAL keeps the events for the next writer
    with pytest.raises(StorageError, match="300 event\\(s\\) not committed.*WAL"):
        w.close()
    assert counts_or_zero(lh) == 0
    w = lh.writer(wal_dir=tmp_path / "wal", max_rows=100, max_age=60, block_timeout=5)
    producer = threading.Thread(target=lambda: w.extend([event(i) for i in range(300, 350)]))
    producer.start()
    time.sleep(0.3)
    down.clear()  # the store is back
    producer.join(timeout=30)
    w.flush(timeout=30)
    st = w.stats()
    w.close()
    assert st.replayed_batches == 3 and st.flushed == 350 and st.last_error is None
    assert counts(lh) == (350, 350)


def counts_or_zero(lh: Lakehouse) -> int:
    return 0 if lh.events_table().current_snapshot() is None else counts(lh)[0]


def test_cdc_events_are_routed_after_the_commit(lh: Lakehouse) -> None:
    """The hook: after a flush commits to events.raw, cdc.* events reach their collection."""
    evs = [{"id": f"c{i}", "ts": 1772359200000 + i, "type": "cdc.insert", "namespace": "app", "collection": "users",
            "payload": {"id": i, "name": f"u{i}"}} for i in range(5)]
    evs.append({"id": "c9", "ts": 1772359200100, "type": "cdc.delete", "namespace": "app", "collection": "users", "payload": {"id": 2}})
    evs.append(event(1))
    with lh.writer(max_age=60) as w:
        w.extend(evs)
    assert w.stats().last_error is None
    assert counts(lh) == (7, 7)
    assert lh.query("SELECT id FROM app.users ORDER BY id").column("id").to_pylist() == [0, 1, 3, 4]


def test_writer_for_another_table(lh: Lakehouse) -> None:
    """Any table works: rows are checked against its schema, then committed in one snapshot."""
    schema = pa.schema([pa.field("k", pa.string(), nullable=False), pa.field("v", pa.int64())])
    lh.create_table("app.metrics", schema, data_path="app/metrics")
    with lh.writer("app.metrics", max_age=60) as w:
        w.extend([{"k": f"k{i}", "v": i} for i in range(50)])
        with pytest.raises(BadInputError, match="field 'v'"):
            w.append({"k": "x", "v": "not a number"})
        with pytest.raises(BadInputError, match="unknown field.*'w'"):
            w.append({"k": "x", "w": 1})
        w.extend(pa.table({"k": ["a", "b"], "v": [1, 2]}))
    assert w.stats().commits == 1
    assert lh.query('SELECT count(*) AS n, sum(v) AS s FROM app.metrics').to_pylist() == [{"n": 52, "s": 1228}]


def _cdc_events(n: int) -> list[dict]:
    return [{"id": f"c-{i}", "ts": (T0 + timedelta(seconds=i)).isoformat(), "type": "cdc.insert",
             "namespace": "app", "collection": "users", "payload": {"id": f"u{i}", "n": i}} for i in range(n)]


def _break_routing(monkeypatch: pytest.MonkeyPatch) -> None:
    from icebergdo.cdc.collection import Collection

    def broken(self, *args, **kwargs):
        raise StorageError("injected routing failure")

    monkeypatch.setattr(Collection, "apply", broken)


def test_cdc_routing_failure_does_not_recommit(lh: Lakehouse, monkeypatch) -> None:
    """A routing failure after the commit is logged and recorded, never reported as a failed flush;
    the raw commit stands, is not repeated, and `route_pending` completes the routing later."""
    from icebergdo.cdc.routing import unrouted

    _break_routing(monkeypatch)
    with lh.writer(max_age=60) as w:
        w.extend([event(i) for i in range(20)] + _cdc_events(5))
    st = w.stats()
    assert st.commits == 1 and st.flushed == 25 and st.last_error is None
    assert counts(lh) == (25, 25)
    pending = unrouted(lh.table("events.raw"))
    assert list(pending.values()) == [["app.users"]]
    assert "app.users" not in lh.tables() or lh.query("SELECT count(*) AS n FROM app.users").to_pylist() == [{"n": 0}]
    monkeypatch.undo()
    assert lh.route_pending() == 1
    assert unrouted(lh.table("events.raw")) == {}
    users = lh.query("SELECT id, n FROM app.users ORDER BY n").to_pylist()
    assert users == [{"id": f"u{i}", "n": i} for i in range(5)]
    assert counts(lh) == (25, 25)


def test_append_events_retry_after_routing_failure_adds_nothing(lh: Lakehouse, monkeypatch) -> None:
    """The old defect: routing failed after events.raw committed, append_events raised, the caller
    retried, and the events were committed twice. Now the call returns normally, and a retry with
    the same batch id (what a careful caller does after any error) commits nothing."""
    _break_routing(monkeypatch)
    batch = [event(i) for i in range(10)] + _cdc_events(3)
    first = lh.append_events(batch, batch_id="01JBATCHRETRYTEST000000000")
    assert first.rows == 13 and not first.already_committed
    again = lh.append_events(batch, batch_id="01JBATCHRETRYTEST000000000")
    assert again.already_committed and again.snapshot_id == first.snapshot_id
    assert counts(lh) == (13, 13)
    monkeypatch.undo()
    # The next successful routing completes the one that failed.
    lh.append_events(_cdc_events(4)[3:], batch_id="01JBATCHRETRYTEST000000001")
    assert lh.query("SELECT count(*) AS n FROM app.users").to_pylist() == [{"n": 4}]
    assert counts(lh) == (14, 14)


def test_a_full_buffer_refuses_at_once_when_asked_not_to_block(lh: Lakehouse, tmp_path, monkeypatch) -> None:
    """For a server: `block_timeout=0` turns a full buffer into an immediate BackpressureError, and
    `extend` returns only once its events are durable, with `stats().accepted` covering them."""
    down = threading.Event()
    down.set()
    real_append = LakehouseClass.append

    def flaky_append(self, *args, **kwargs):
        if down.is_set():
            raise StorageError("injected: object store unreachable")
        return real_append(self, *args, **kwargs)

    monkeypatch.setattr(LakehouseClass, "append", flaky_append)
    w = lh.writer(wal_dir=tmp_path / "wal", max_rows=50, max_pending_rows=100, max_age=60)
    try:
        assert w.extend([event(i) for i in range(50)]) == 50 and w.stats().accepted == 50
        assert sum(p.stat().st_size for p in (tmp_path / "wal").glob("*.arrow")) > 0  # durable before it returned
        w.extend([event(i) for i in range(50, 100)])
        started = time.monotonic()
        with pytest.raises(BackpressureError, match="100 events behind"):
            w.extend([event(100)], block_timeout=0)
        assert time.monotonic() - started < 1.0
        assert w.stats().accepted == 100
    finally:
        down.clear()
        w.close()
    assert counts(lh) == (100, 100)
