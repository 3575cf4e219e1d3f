"""A local write-ahead log for the buffered writer: Arrow IPC segments in a folder one writer owns.

Layout of a WAL folder:

    LOCK                         fcntl.flock'ed by the owning writer (two writers never share a folder)
    writer-id                    the writer id (ULID) recorded in every snapshot this folder commits
    {batch_id}.{part:04d}.arrow  Arrow IPC stream (zstd) of the events of one not-yet-committed batch

A batch is what one flush commits. Its events go to `{batch_id}.0000.arrow`; a new part starts
only when the Arrow schema changes (new columns with `unknown="keep"`). Segments are fsynced
before `append` returns and deleted only after the commit carrying their batch id succeeded.
A torn tail (the process died mid-write) is dropped on replay: it was never acknowledged.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from ulid import ULID

from icebergdo.errors import StorageError, WalLockedError

log = logging.getLogger(__name__)

LOCK_FILE = "LOCK"
WRITER_ID_FILE = "writer-id"
_SEGMENT = re.compile(r"^(?P<batch>[0-9A-Z]{26})\.(?P<part>\d{4})\.arrow$")


@dataclass
class LeftoverBatch:
    """A batch found on disk at start: its id, its readable rows and its files."""

    batch_id: str
    tables: list[pa.Table]
    paths: list[Path] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.tables)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentWriter:
    """One open IPC stream file; `write` buffers in the OS, `sync` makes it durable."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        # zstd: ~9x fewer bytes to write and fsync, and faster overall than uncompressed on a real disk.
        self._stream = pa.ipc.new_stream(self._file, schema, options=pa.ipc.IpcWriteOptions(compression="zstd"))
        _fsync_dir(path.parent)  # the file's name must survive a crash, not only its bytes

    def write(self, table: pa.Table) -> None:
        self._stream.write_table(table)

    def sync(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        try:
            self._stream.close()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()


class WriteAheadLog:
    """The folder a writer owns. Open it once; `close()` releases the lock."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser().resolve()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create WAL folder {self.folder}: {e}") from None
        self._lock_fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise WalLockedError(
                f"WAL folder {self.folder} is in use by another writer; give each writer its own folder"
            ) from None
        self.writer_id = self._load_writer_id()

    def _load_writer_id(self) -> str:
        path = self.folder / WRITER_ID_FILE
        try:
            text = path.read_text().strip()
            if text:
                return text
        except FileNotFoundError:
            pass
        wid = str(ULID())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(wid)
        os.replace(tmp, path)
        _fsync_dir(self.folder)
        return wid

    def segment_path(self, batch_id: str, part: int) -> Path:
        return self.folder / f"{batch_id}.{part:04d}.arrow"

    def open_segment(self, batch_id: str, part: int, schema: pa.Schema) -> SegmentWriter:
        try:
            return SegmentWriter(self.segment_path(batch_id, part), schema)
        except OSError as e:
            raise StorageError(f"cannot write WAL segment in {self.folder}: {e}") from None

    def leftovers(self) -> Iterator[LeftoverBatch]:
        """Batches left by a previous run, oldest first (batch ids are ULIDs, so names sort by time)."""
        groups: dict[str, list[tuple[int, Path]]] = {}
        for path in self.folder.iterdir():
            m = _SEGMENT.match(path.name)
            if m:
                groups.setdefault(m["batch"], []).append((int(m["part"]), path))
        for batch_id in sorted(groups):
            parts = sorted(groups[batch_id])
            tables = [t for _, p in parts if (t := read_segment(p)) is not None and t.num_rows]
            yield LeftoverBatch(batch_id, tables, [p for _, p in parts])

    def delete(self, paths: list[Path]) -> None:
        for p in paths:
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def close(self) -> None:
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1


def read_segment(path: Path) -> pa.Table | None:
    """Every complete record batch of a segment; a torn tail (crash mid-write) is dropped."""
    batches: list[pa.RecordBatch] = []
    schema = None
    try:
        with pa.OSFile(str(path), "rb") as f:
            reader = pa.ipc.open_stream(f)
            schema = reader.schema
            while True:
                try:
                    batches.append(reader.read_next_batch())
                except StopIteration:
                    break
    except (pa.ArrowInvalid, OSError, EOFError) as e:
        if schema is None:
            log.info("WAL segment %s has no complete header (%s); nothing in it was acknowledged", path.name, e)
            return None
        log.info("WAL segment %s: dropped a torn tail after %d batch(es)", path.name, len(batches))
    if schema is None:
        return None
    return pa.Table.from_batches(batches, schema=schema)
