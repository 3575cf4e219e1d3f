"""The exactly-once ledger on both backends: replays consult the ledger, not the snapshot history, so
expiring every snapshot but the last changes nothing; older WALs and history-only tables migrate;
the commit guard stops a duplicate even when the pre-check could not see it; gone writers are pruned."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from icebergdo import Lakehouse, commit, ledger
from icebergdo.iceberg import datafiles
from icebergdo.maintenance import MaintenanceOptions
from icebergdo.schema import to_events
from icebergdo.wal import SegmentWriter, WriteAheadLog

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def event(i: int, prefix: str = "e") -> dict:
    return {"id": f"{prefix}-{i}", "ts": (T0 + timedelta(seconds=37 * i)).isoformat(), "type": "webhook", "payload": {"i": i}}


def counts(lh: Lakehouse) -> tuple[int, int]:
    row = lh.query("SELECT count(*) AS n, count(DISTINCT id) AS d FROM events").to_pylist()[0]
    return row["n"], row["d"]


def expire_all_but_last(lh: Lakehouse) -> None:
    lh.maintain(["events.raw"], ["expire"], options=MaintenanceOptions(older_than=0, retain_last=1), progress=None)
    assert len(lh.events_table().metadata.snapshots) == 1


def test_replay_after_expiring_all_but_the_last_snapshot_commits_nothing_twice(lh: Lakehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Crash between commits and segment deletion (deletion disabled), then aggressive expiry, then replay."""
    folder = tmp_path / "wal"
    monkeypatch.setattr(WriteAheadLog, "delete", lambda self, paths: None)  # fault: segments survive their commits
    with lh.writer(wal_dir=folder, max_rows=50, max_age=60, upkeep=False) as w:
        for start in (0, 50, 100):
            w.extend([event(i) for i in range(start, start + 50)])  # each fills a batch: three commits
    monkeypatch.undo()
    first = w.stats()
    assert first.commits == 3 and len(list(folder.glob("*.arrow"))) == 3
    batches = commit.committed_batch_ids(lh.events_table())
    expire_all_but_last(lh)
    assert len(batches - commit.committed_batch_ids(lh.events_table())) == 2  # the history no longer knows them

    with lh.writer(wal_dir=folder, max_rows=50, max_age=60, upkeep=False) as w2:
        w2.append(event(999))
    st = w2.stats()
    assert (st.replayed_batches, st.skipped_batches, st.commits) == (3, 3, 1)
    assert counts(lh) == (151, 151)
    assert ledger.committed_upto(lh.events_table().metadata.properties, first.writer_id) == 4
    assert not list(folder.glob("*.arrow"))


def test_older_wal_and_history_only_ledger_replay_exactly_once(lh: Lakehouse, tmp_path: Path) -> None:
    """A WAL of the previous version (ULID-named segments, no sequence) whose first batch was committed
    with only a snapshot-summary record: that one is found in the history, the other is numbered."""
    folder = tmp_path / "old-wal"
    old = WriteAheadLog(folder)  # no table binding: what the previous version created
    wid = old.writer_id
    done_id, todo_id = "01JOLDBATCH000000000000001", "01JOLDBATCH000000000000002"
    for batch_id, prefix in ((done_id, "done"), (todo_id, "todo")):
        data = to_events([event(i, prefix) for i in range(10)])
        seg = SegmentWriter(old.segment_path(None, batch_id, 0), data.schema)
        seg.write(data)
        seg.close()
    old.close()
    lh.append("events.raw", to_events([event(i, "done") for i in range(10)]), batch_id=done_id, writer_id=wid)  # the old way
    assert ledger.committed_upto(lh.events_table().metadata.properties, wid) is None

    with lh.writer(wal_dir=folder, max_age=60, upkeep=False) as w:
        pass
    st = w.stats()
    assert (st.replayed_batches, st.skipped_batches, st.commits) == (2, 1, 1)
    assert counts(lh) == (20, 20)
    table = lh.events_table()
    assert ledger.committed_upto(table.metadata.properties, wid) == 1  # the ledger takes over from here
    snap = commit.find_batch(table, todo_id)
    assert snap is not None and snap.summary[commit.WRITER_SEQ] == "1"
    with lh.writer(wal_dir=folder, max_age=60, upkeep=False) as again:
        again.append(event(1, "new"))
    assert again.stats().replayed_batches == 0 and counts(lh) == (21, 21)
    assert ledger.committed_upto(lh.events_table().metadata.properties, wid) == 2


def test_commit_guard_refuses_a_batch_the_ledger_covers(lh: Lakehouse) -> None:
    """A committer whose view of the table predates the commit of the same batch (a late-landing retry):
    its pre-check passes, the catalog-side guard refuses it, and its data files are removed."""
    wid = "01JWR1TER00000000000000001"
    stale = lh.events_table()
    batch = to_events([event(i) for i in range(10)])
    first = lh.append("events.raw", batch, batch_id="01JBATCH000000000000000001", writer_id=wid, writer_seq=1)
    assert not first.already_committed
    files_before = {t.file.file_path for t in lh.events_table().scan().plan_files()}

    written: list[str] = []
    real = datafiles.write_append

    def spy(table, data, *rest):  # type: ignore[no-untyped-def]
        prepared = real(table, data, *rest)
        written.extend(f.file_path for f in prepared.files)
        return prepared

    datafiles.write_append = spy  # type: ignore[assignment]
    try:
        outcome = commit.append_idempotent(
            lambda: lh.events_table(), batch, table=stale, batch_id="01JBATCH000000000000000002",  # another id: history can't tell
            writer_id=wid, writer_seq=1, what="events.raw",
        )
    finally:
        datafiles.write_append = real  # type: ignore[assignment]
    assert outcome.already_committed and outcome.snapshot is not None and outcome.snapshot.snapshot_id == first.snapshot_id
    assert written, "the stale committer did write its files before the guard refused it"
    io = lh.events_table().io
    assert not any(io.new_input(p).exists() for p in written)  # never referenced: removed
    assert counts(lh) == (10, 10)
    assert {t.file.file_path for t in lh.events_table().scan().plan_files()} == files_before

    expire_all_but_last(lh)  # history-independent: still refused after expiry
    again = lh.append("events.raw", batch, batch_id="01JBATCH000000000000000003", writer_id=wid, writer_seq=1)
    assert again.already_committed and counts(lh) == (10, 10)
    lh.append("events.raw", to_events([event(i, "next") for i in range(5)]), writer_id=wid, writer_seq=2)
    assert counts(lh) == (15, 15)


def test_ledger_entries_of_gone_writers_are_pruned(lh: Lakehouse) -> None:
    lh.append_events([event(0)])
    now = int(time.time() * 1000)
    gone, alive = "01JG0NE0000000000000000001", "01JA11VE000000000000000001"
    with lh.events_table().transaction() as tx:
        tx.set_properties({ledger.key(gone): ledger.encode(9, now - 31 * 86_400_000),
                           ledger.key(alive): ledger.encode(3, now - 86_400_000), "app.note": "kept"})
    lh.upkeep.run("events.raw")
    props = lh.events_table().metadata.properties
    assert ledger.key(gone) not in props
    assert props[ledger.key(alive)].startswith("3@") and props["app.note"] == "kept"
    assert lh.upkeep.stats().ledger_pruned == 1


def test_a_fresh_batch_behind_the_ledger_is_renumbered_never_dropped(lh: Lakehouse, tmp_path: Path) -> None:
    """Defence in depth: if the ledger is ahead of a writer (another holder of its id committed those
    numbers), its new batches are renumbered above the ledger and committed, not mistaken for done."""
    with lh.writer(wal_dir=tmp_path / "wal", max_age=60, upkeep=False) as w:
        with lh.events_table().transaction() as tx:  # what another holder of this writer id would have left
            tx.set_properties({ledger.key(w.writer_id): ledger.encode(10, int(time.time() * 1000))})
        w.extend([event(i) for i in range(20)])
        w.flush(timeout=60)
        st = w.stats()
    assert st.commits == 1 and st.skipped_batches == 0 and st.retries == 1
    assert counts(lh) == (20, 20)
    assert ledger.committed_upto(lh.events_table().metadata.properties, w.writer_id) == 11
