"""The write-ahead log's files (`icebergdo.wal`) in a tmp folder: segments written and read back, a
torn tail cut at every byte, the folder lock, the writer id, leftovers in batch order."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest
from ulid import ULID

from icebergdo.errors import WalLockedError
from icebergdo.wal import LOCK_FILE, SegmentWriter, WriteAheadLog, read_segment

SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("n", pa.int64()), pa.field("payload", pa.string())])


def chunk(start: int, rows: int) -> pa.Table:
    return pa.table(
        {"id": [f"e{i}" for i in range(start, start + rows)], "n": list(range(start, start + rows)), "payload": ['{"k":"' + "x" * (i % 50) + '"}' for i in range(rows)]},
        schema=SCHEMA,
    )


def write_segment(path: Path, chunks: list[pa.Table], *, close: bool = True) -> list[int]:
    """Write `chunks` as one segment; returns the file size after each chunk was synced."""
    w = SegmentWriter(path, SCHEMA)
    sizes = []
    for t in chunks:
        w.write(t)
        w.sync()
        sizes.append(path.stat().st_size)
    if close:
        w.close()
    else:
        w._file.close()  # the process died: no end-of-stream marker
    return sizes


def test_segment_round_trip(tmp_path: Path) -> None:
    chunks = [chunk(0, 10), chunk(10, 1), chunk(11, 300)]
    path = tmp_path / "seg.arrow"
    write_segment(path, chunks)
    got = read_segment(path)
    assert got is not None and got.schema == SCHEMA
    assert got.to_pylist() == pa.concat_tables(chunks).to_pylist()


def test_segment_without_end_marker_reads_every_synced_chunk(tmp_path: Path) -> None:
    path = tmp_path / "seg.arrow"
    chunks = [chunk(0, 5), chunk(5, 7)]
    write_segment(path, chunks, close=False)
    assert read_segment(path).to_pylist() == pa.concat_tables(chunks).to_pylist()  # type: ignore[union-attr]


def test_torn_tail_keeps_exactly_the_complete_chunks(tmp_path: Path) -> None:
    """Cut the file short: what is read is always the chunks that were complete, never an error.

    Cuts at every byte within 32 bytes of each chunk's end, and every 5th byte elsewhere.
    """
    full = tmp_path / "full.arrow"
    chunks = [chunk(0, 3), chunk(3, 4), chunk(7, 2)]
    sizes = write_segment(full, chunks, close=False)
    data = full.read_bytes()
    cuts = set(range(0, len(data) + 1, 5)) | {c for end in sizes for c in range(end - 32, end + 33) if 0 <= c <= len(data)}
    torn = tmp_path / "torn.arrow"
    header = None
    for cut in sorted(cuts):
        torn.write_bytes(data[:cut])
        got = read_segment(torn)
        complete = sum(size <= cut for size in sizes)
        if got is None:
            assert complete == 0, cut  # only a file without a complete header reads as nothing
            continue
        header = cut if header is None else header
        assert got.schema == SCHEMA
        assert got.to_pylist() == (pa.concat_tables(chunks[:complete]).to_pylist() if complete else []), cut
    assert header is not None and header < sizes[0]  # a header alone reads as an empty table


def test_garbage_and_missing_segments(tmp_path: Path) -> None:
    junk = tmp_path / "junk.arrow"
    junk.write_bytes(os.urandom(64))
    assert read_segment(junk) is None
    empty = tmp_path / "empty.arrow"
    empty.write_bytes(b"")
    assert read_segment(empty) is None
    assert read_segment(tmp_path / "absent.arrow") is None


# -- the folder ---------------------------------------------------------------------------------
def test_one_writer_per_folder_and_a_stable_writer_id(tmp_path: Path) -> None:
    folder = tmp_path / "wal"
    first = WriteAheadLog(folder)
    try:
        assert (folder / LOCK_FILE).exists() and len(first.writer_id) == 26
        with pytest.raises(WalLockedError, match="in use by another writer") as err:
            WriteAheadLog(folder)
        assert err.value.exit_code == 5
    finally:
        first.close()
    again = WriteAheadLog(folder)  # the lock is free again, and the folder keeps its writer id
    try:
        assert again.writer_id == first.writer_id
    finally:
        again.close()
        again.close()  # closing twice is harmless


def test_leftovers_are_grouped_by_batch_oldest_first(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal")
    try:
        older, newer = str(ULID()), str(ULID())
        assert older < newer
        # newer batch: two parts (the schema changed); older batch: one part with a torn tail
        for part, t in ((0, chunk(100, 2)), (1, chunk(102, 3))):
            w = wal.open_segment(2, newer, part, SCHEMA)
            w.write(t)
            w.close()
        path = wal.segment_path(1, older, 0)
        write_segment(path, [chunk(0, 4)], close=False)
        with open(path, "ab") as f:
            f.write(b"\x01\x02\x03")  # half a message
        (wal.folder / "not-a-segment.arrow").write_bytes(b"ignored")
        found = list(wal.leftovers())
        assert [b.batch_id for b in found] == [older, newer]
        assert found[0].rows == 4 and found[1].rows == 5
        assert [b.seq for b in found] == [1, 2]
        assert [p.name for p in found[1].paths] == [f"000000000002-{newer}.0000.arrow", f"000000000002-{newer}.0001.arrow"]
        assert pa.concat_tables(found[1].tables).column("n").to_pylist() == [100, 101, 102, 103, 104]
        wal.delete(found[0].paths + found[0].paths)  # deleting twice is harmless
        assert [b.batch_id for b in wal.leftovers()] == [newer]
    finally:
        wal.close()
