"""The write-ahead log on a local folder (no servers): segment names and replay order, torn tails,
permissions, the folder lock and its table binding, dead letters, and per-writer default folders."""

from __future__ import annotations

import stat
from pathlib import Path

import pyarrow as pa
import pytest

from icebergdo import wal
from icebergdo.errors import ConfigError, WalLockedError

B1, B2, B3 = "01JB0000000000000000000001", "01JB0000000000000000000002", "01JB0000000000000000000003"


def rows(start: int, n: int = 10, **extra: list) -> pa.Table:
    return pa.table({"i": list(range(start, start + n)), **extra})


def write(log: wal.WriteAheadLog, seq: int, batch: str, *tables: pa.Table) -> list[Path]:
    seg = log.open_segment(seq, batch, 0, tables[0].schema)
    for t in tables:
        seg.write(t)
        seg.sync()
    seg.close()
    return [seg.path]


def test_segment_names_and_replay_order() -> None:
    assert wal.segment_name(7, B1, 0) == f"000000000007-{B1}.0000.arrow"
    assert wal.segment_name(None, B1, 2) == f"{B1}.0002.arrow"  # an older version's name
    assert wal.parse_segment_name(f"000000000007-{B1}.0001.arrow") == (7, B1, 1)
    assert wal.parse_segment_name(f"{B1}.0000.arrow") == (None, B1, 0)
    for other in ("LOCK", "writer-id", "table", f"{B1}.arrow", "rejected", f"7-{B1}.0000.arrow"):
        assert wal.parse_segment_name(other) is None, other
    names = [f"000000000010-{B1}.0000.arrow", f"000000000002-{B3}.0001.arrow", f"000000000002-{B3}.0000.arrow",
             f"{B2}.0000.arrow", f"{B1}.0000.arrow", "LOCK"]
    order = [(seq, batch, [p for p, _ in parts]) for seq, batch, parts in wal.group_segments(names)]
    # older-version batches first (by ULID = creation order), then by sequence; parts in order
    assert order == [(None, B1, [0]), (None, B2, [0]), (2, B3, [0, 1]), (10, B1, [0])]


def test_torn_tail_keeps_every_complete_record_batch(tmp_path: Path) -> None:
    path = tmp_path / wal.segment_name(1, B1, 0)
    seg = wal.SegmentWriter(path, rows(0).schema)
    ends = []
    for b in range(5):
        seg.write(rows(b * 10))
        seg.sync()
        ends.append(path.stat().st_size)
    seg.close()
    data = path.read_bytes()
    for cut in sorted({0, 7, ends[0] - 1, ends[0], ends[0] + 3, ends[2] - 5, ends[2], len(data) - 1, len(data)}):
        path.write_bytes(data[:cut])
        table = wal.read_segment(path)
        assert (0 if table is None else table.num_rows) == 10 * sum(1 for e in ends if e <= cut), cut


def test_folder_is_private_locked_and_bound_to_one_table(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b" / "wal"
    log = wal.WriteAheadLog(folder, table="events.raw")
    try:
        for d in (tmp_path / "a", tmp_path / "a" / "b", folder):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        path = write(log, 1, B1, rows(0))[0]
        for f in (path, folder / wal.LOCK_FILE, folder / wal.WRITER_ID_FILE, folder / wal.TABLE_FILE):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        with pytest.raises(WalLockedError, match="in use by another writer"):
            wal.WriteAheadLog(folder, table="events.raw")
        assert wal.is_in_use(folder)
        assert wal.try_open(folder, "events.raw") is None
    finally:
        log.close()
    assert not wal.is_in_use(folder)
    with pytest.raises(ConfigError, match="holds batches of table events.raw, not app.other"):
        wal.WriteAheadLog(folder, table="app.other")
    again = wal.WriteAheadLog(folder, table="events.raw")  # the lock was released by the refusal
    assert again.writer_id == log.writer_id
    again.close()


def test_leftovers_renumber_and_dead_letters(tmp_path: Path) -> None:
    log = wal.WriteAheadLog(tmp_path / "w", table="events.raw")
    legacy = log.segment_path(None, B1, 0)
    seg = wal.SegmentWriter(legacy, rows(0).schema)
    seg.write(rows(0))
    seg.close()
    write(log, 4, B2, rows(10), rows(20))
    write(log, 5, B3, rows(30, country=["NL"] * 10))
    lefts = log.leftovers()
    assert [(b.seq, b.batch_id, b.rows) for b in lefts] == [(None, B1, 10), (4, B2, 20), (5, B3, 10)]
    log.renumber(lefts[0], 6)
    assert lefts[0].seq == 6 and lefts[0].paths == [log.segment_path(6, B1, 0)] and not legacy.exists()
    assert [(b.seq, b.batch_id) for b in log.leftovers()] == [(4, B2), (5, B3), (6, B1)]

    folder = log.reject(5, B3, lefts[2].paths, {"reason": "does not fit: country", "rows": 10})
    assert folder == tmp_path / "w" / wal.REJECTED_DIR and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [(b.seq, b.batch_id) for b in log.leftovers()] == [(4, B2), (6, B1)]  # out of the replay for good
    (rej,) = log.rejected()
    assert (rej.batch_id, rej.seq, rej.rows, rej.reason) == (B3, 5, 10, "does not fit: country")
    back = log.requeue(rej, 7)
    assert back.seq == 7 and back.rows == 10 and log.rejected() == []
    assert [(b.seq, b.batch_id) for b in log.leftovers()] == [(4, B2), (6, B1), (7, B3)]
    assert "country" in log.leftovers()[-1].tables[0].column_names
    log.reject(7, B3, back.paths, {"reason": "again"})
    wal.drop_rejected(log.rejected()[0])
    assert log.rejected() == [] and not list(folder.iterdir())
    log.close()


def test_claim_reuses_free_folders_and_adopts_abandoned_ones(tmp_path: Path) -> None:
    root = tmp_path / "wal" / "events.raw"
    own1, adopted = wal.claim(root, "events.raw")
    assert adopted == [] and own1.folder.parent == root and own1.writer_id == own1.folder.name
    own2, _ = wal.claim(root, "events.raw")  # the first is held: a second writer gets its own folder
    assert own2.folder != own1.folder
    write(own2, 1, B1, rows(0))
    own2.close()  # its owner "died" with a batch in its log
    own1.close()  # the first one stopped cleanly
    own3, adopted = wal.claim(root, "events.raw")
    assert own3.folder == min(own1.folder, own2.folder)  # the first free folder is reused: no folder per run
    if own3.folder == own2.folder:
        assert adopted == []  # its leftovers are replayed as its own
    else:
        assert [a.folder for a in adopted] == [own2.folder]
    held = {own3.folder, *(a.folder for a in adopted)}
    assert all(wal.is_in_use(f) for f in held)
    for a in adopted:
        a.close()
    own3.close()
    assert len(wal.writer_folders(root)) == 2  # bounded by the peak number of concurrent writers


def test_claim_adopts_an_older_versions_single_folder(tmp_path: Path) -> None:
    root = tmp_path / "wal" / "events.raw"
    old = wal.WriteAheadLog(root)  # how a previous version used the table's folder itself
    seg = wal.SegmentWriter(old.segment_path(None, B1, 0), rows(0).schema)
    seg.write(rows(0))
    seg.close()
    old.close()
    own, adopted = wal.claim(root, "events.raw")
    assert own.folder.parent == root
    assert [a.folder for a in adopted] == [root]
    assert adopted[0].leftovers()[0].batch_id == B1
    for log in (own, *adopted):
        log.close()
