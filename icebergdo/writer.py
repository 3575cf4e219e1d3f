"""The buffered writer: many small appends become few well-sized Iceberg commits, each exactly once.

Why: an Iceberg commit costs a metadata file, a manifest list and a catalog round trip, and its
cost grows with the table's history; 1000 commits of 1k rows take minutes, one of 1M rows takes
under a second. The writer buffers accepted events and commits them in one snapshot per flush.

How it is built:

- `append`/`extend` validate the events (schema.py) in the caller's thread, wait for room in the
  bounded buffer (backpressure) and queue the batch.
- Group commit without a hand-off thread: one caller at a time is the *leader*; it takes every
  queued batch, writes them to the WAL segment of the current batch, fsyncs once for the whole
  group, then wakes their callers; whoever queued meanwhile forms the next group. An `append`
  returns only when its event is durable. The leader seals the current batch when a threshold
  (rows, bytes) is reached; a small *ager* thread seals it when its oldest event is `max_age`
  old; `flush()` and `close()` seal it too.
- The *flusher* thread commits sealed batches in order, one Iceberg commit each. The invariants
  that make a crash at any point lose nothing and duplicate nothing:
  * a durable writer (one WAL folder = one writer id) numbers its batches 1, 2, 3… and commits them
    strictly in that order; the commit of batch N also records "writer W committed up to N" in the
    table's exactly-once ledger, atomically, and is refused if the ledger already covers N
    (`icebergdo.ledger`). A replayed batch is therefore never committed twice, however much
    snapshot history was expired meanwhile;
  * WAL segments are deleted only after their commit succeeded (or was found already done);
  * a batch that can never commit (`commit.is_permanent`: it does not fit the table) is not
    retried: it moves to the WAL's dead-letter folder before any later batch commits, so the
    ledger never skips a batch still waiting, and the log never blocks behind it. Every other
    failure is retried with backoff, in order, forever (the bounded buffer pushes back on producers).
- Default WAL folders are per writer (`wal.claim`): a writer takes a free folder and adopts every
  abandoned one that still holds batches, replaying them under their own writer ids.
- After each commit `Tables.append` runs the post-commit hooks: CDC routing, and the table upkeep
  the facade registers (`icebergdo.upkeep`; `upkeep=False` opts this writer out).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from ulid import ULID

from icebergdo import commit, layout, ledger
from icebergdo.commit import BATCH_ID, WRITER_ID, committed_batch_ids
from icebergdo.config import Config
from icebergdo.errors import (
    BackpressureError,
    BadInputError,
    FlushTimeoutError,
    IcebergdoError,
    RejectedBatchError,
    StorageError,
)
from icebergdo.schema import TS, Unknown, to_events
from icebergdo.tables import Tables
from icebergdo.wal import SegmentWriter, WriteAheadLog, claim

log = logging.getLogger(__name__)

# The snapshot summary keys every flush carries (icebergdo/commit.py).
BATCH_ID_PROPERTY = BATCH_ID
WRITER_ID_PROPERTY = WRITER_ID

DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_MAX_BYTES = 128 * 1024 * 1024
DEFAULT_MAX_AGE = 5.0
DEFAULT_BLOCK_TIMEOUT = 30.0
DEFAULT_CLOSE_TIMEOUT = 60.0
PENDING_FACTOR = 4  # the buffer holds at most 4 flushes' worth of events before `append` blocks
MIN_BACKOFF, MAX_BACKOFF = 0.1, 5.0


def backoff_after(failures: int) -> float:
    """Seconds the flusher waits after `failures` consecutive failed commits: 0.1 s doubling to 5 s."""
    return min(MAX_BACKOFF, MIN_BACKOFF * 2 ** min(max(failures, 1) - 1, 16))


@dataclass(frozen=True)
class WriterStats:
    """A point-in-time view of a writer (`writer.stats()`).

    `accepted` counts events whose `append`/`extend` returned (durable, with a WAL): it only grows,
    so a server can acknowledge up to it. `rejected_*` count dead-lettered batches.
    """

    writer_id: str
    table: str
    durable: bool
    wal_dir: str | None
    accepted: int = 0
    flushed: int = 0
    pending: int = 0
    commits: int = 0
    files: int = 0
    age_flushes: int = 0
    replayed_batches: int = 0
    skipped_batches: int = 0
    rejected_batches: int = 0
    rejected_events: int = 0
    adopted_folders: int = 0
    retries: int = 0
    wal_syncs: int = 0
    last_commit_seconds: float | None = None
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Batch:
    """What one flush commits: in memory, and (durable) in WAL segments named by seq and batch id.

    `ticket` orders every batch this writer queues (flush() waits by it); `seq` is the batch's
    number in its WAL folder's ledger (None: a batch of an older WAL version already found in the
    snapshot history, replayed only so its post-commit hooks run).
    """

    ticket: int
    seq: int | None
    batch_id: str
    writer_id: str
    wal: WriteAheadLog | None = None
    tables: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    nbytes: int = 0
    oldest: float | None = None
    segments: list[SegmentWriter] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    replayed: bool = False
    attempts: int = 0
    reason: str = ""


class _Waiter:
    __slots__ = ("table", "done", "error", "seq")

    def __init__(self, table: pa.Table | None = None) -> None:
        self.table = table
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.seq = 0


class Writer:
    """Buffered, thread-safe, optionally durable writer for one table. Use as a context manager.

    Thresholds: a flush happens when the buffer holds `max_rows` events or `max_bytes` bytes
    (Arrow size), when its oldest event is `max_age` seconds old, on `flush()` and on `close()`.

    For a server on top of it: `extend()` returns only when its events are durable (fsynced to the
    WAL) and then `stats().accepted` covers them; with `block_timeout=0` (per writer, or per call)
    a full buffer raises `BackpressureError` at once instead of waiting; `stats()` is cheap and
    thread-safe.
    """

    def __init__(
        self,
        tables: Tables,
        table: str = layout.EVENTS_TABLE,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age: float = DEFAULT_MAX_AGE,
        wal_dir: str | Path | None = None,
        durable: bool | None = None,
        unknown: Unknown = "error",
        block_timeout: float = DEFAULT_BLOCK_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        max_pending_rows: int | None = None,
        max_pending_bytes: int | None = None,
        upkeep: bool = True,
    ) -> None:
        if max_rows < 1 or max_bytes < 1 or not max_age > 0:
            raise IcebergdoError("writer: max_rows, max_bytes and max_age must be positive")
        if unknown not in ("error", "payload", "keep"):
            raise IcebergdoError(f"writer: unknown must be 'error', 'payload' or 'keep', got {unknown!r}")
        if block_timeout < 0:
            raise IcebergdoError("writer: block_timeout must be >= 0")
        self.tables = tables
        self.table_name = table
        self.max_rows, self.max_bytes, self.max_age = max_rows, max_bytes, float(max_age)
        self.unknown: Unknown = unknown
        self.block_timeout, self.close_timeout = block_timeout, close_timeout
        self.max_pending_rows = max_pending_rows or PENDING_FACTOR * max_rows
        self.max_pending_bytes = max_pending_bytes or PENDING_FACTOR * max_bytes
        self.upkeep = upkeep
        self.durable = bool(wal_dir is not None) if durable is None else durable
        self._is_events = table == layout.EVENTS_TABLE
        target = tables.table(table)  # fails early on a missing table; creates events.raw
        if upkeep:
            target = tables.ensure_streaming_defaults(table, target)
        self._arrow_schema = None if self._is_events else target.schema().as_arrow()

        self._wal: WriteAheadLog | None = None
        adopted: list[WriteAheadLog] = []
        if self.durable:
            if wal_dir is None:
                self._wal, adopted = claim(default_wal_dir(tables, table), table)
            else:
                self._wal = WriteAheadLog(wal_dir, table=table)
        self.writer_id = self._wal.writer_id if self._wal else str(ULID())

        self._lock = threading.Lock()
        self._leader_cv = threading.Condition(self._lock)
        self._ager_cv = threading.Condition(self._lock)
        self._space_cv = threading.Condition(self._lock)
        self._flusher_cv = threading.Condition(self._lock)
        self._commit_cv = threading.Condition(self._lock)
        self._inbox: list[_Waiter] = []
        self._leader = False
        self._sealed: deque[_Batch] = deque()
        self._ticket = 0
        self._next_seq = 1
        self._last_sealed_ticket = 0
        self._committed_ticket = 0
        self._pending_rows = 0
        self._pending_bytes = 0
        self._closing = self._closed = False
        self._stop_ager = self._stop_flusher = False
        self._kick = False  # flush() asks a backing-off flusher to retry now
        self._counters = {k: 0 for k in (
            "accepted", "flushed", "commits", "files", "age_flushes", "replayed_batches", "skipped_batches",
            "rejected_batches", "rejected_events", "adopted_folders", "retries", "wal_syncs",
        )}
        self._last_commit_seconds: float | None = None
        self._last_error: str | None = None
        self._unreported: list[str] = []  # rejections flush()/close() have not raised yet
        self._adopted: dict[WriteAheadLog, int] = {}  # adopted folder -> batches of it still queued

        if self._wal is not None:
            try:
                # Read the ledger only now that the folders are locked: a writer that held one of them
                # until a moment ago may have committed meanwhile, and our numbers must follow its.
                target = tables.table(table)
                self._replay(target.metadata.properties, self._wal, own=True)
                for wal in adopted:
                    self._replay(target.metadata.properties, wal, own=False)
            except BaseException:
                for wal in (self._wal, *adopted):
                    wal.close()
                raise
        self._current = self._new_batch()
        self._ager = threading.Thread(target=self._ager_loop, name=f"icebergdo-writer-age-{self.writer_id[-6:]}", daemon=True)
        self._flusher = threading.Thread(target=self._flusher_loop, name=f"icebergdo-writer-flush-{self.writer_id[-6:]}", daemon=True)
        self._ager.start()
        self._flusher.start()

    # -- public API ------------------------------------------------------------------------
    def append(self, event: Mapping[str, Any], *, block_timeout: float | None = None) -> None:
        """Accept one event; returns once it is buffered (and durable, with a WAL)."""
        if not isinstance(event, Mapping):
            raise BadInputError(f"append: expected one event (a dict), got {type(event).__name__}; use extend() for many")
        self.extend([event], block_timeout=block_timeout)

    def extend(self, events: Iterable[Mapping[str, Any]] | pa.Table | pa.RecordBatch, *, block_timeout: float | None = None) -> int:
        """Accept many events at once (dicts or a pyarrow Table/RecordBatch: the fast path). All or none.

        Returns the number of events accepted, once they are durable (fsynced to the WAL of a
        durable writer); `stats().accepted` then includes them. When the buffer is full, waits up
        to `block_timeout` (default: the writer's) for room, then raises `BackpressureError`
        (`block_timeout=0`: at once) and accepts nothing.
        """
        batch = self._validate(events)
        n = batch.num_rows
        if n == 0:
            return 0
        waiter = _Waiter(batch)
        nbytes = batch.nbytes
        wait_s = self.block_timeout if block_timeout is None else max(0.0, block_timeout)
        deadline = time.monotonic() + wait_s
        with self._lock:
            self._check_open()
            while self._pending_rows > 0 and (
                self._pending_rows + n > self.max_pending_rows or self._pending_bytes + nbytes > self.max_pending_bytes
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BackpressureError(
                        f"writer for {self.table_name} is {self._pending_rows} events behind and waited "
                        f"{wait_s:g}s for room; {n} event(s) not accepted"
                        + (f" (last flush error: {self._last_error})" if self._last_error else "")
                    )
                self._space_cv.wait(remaining)
                self._check_open()
            self._pending_rows += n
            self._pending_bytes += nbytes
            self._inbox.append(waiter)
            while not waiter.done.is_set():
                if self._leader:
                    self._leader_cv.wait()
                    continue
                self._leader = True
                items, self._inbox = self._inbox, []
                self._lock.release()
                try:
                    self._absorb(items)
                    cur = self._current
                    if cur.rows >= self.max_rows or cur.nbytes >= self.max_bytes:
                        self._seal(cur, "rows" if cur.rows >= self.max_rows else "bytes")
                finally:
                    self._lock.acquire()
                    self._leader = False
                    self._leader_cv.notify_all()
        if waiter.error is not None:
            raise waiter.error
        return n

    def flush(self, timeout: float | None = None) -> None:
        """Commit everything accepted so far; wait until it is committed (or raise after `timeout`).

        Raises `RejectedBatchError` if a batch could not be committed since the last flush and
        went to the dead-letter folder (everything else was committed).
        """
        with self._lock:
            if self._closed:
                raise IcebergdoError("writer is closed")
        target = self._seal_as_leader("flush")
        with self._lock:
            self._kick = True
            self._flusher_cv.notify()
            ok = self._commit_cv.wait_for(lambda: self._committed_ticket >= target or not self._flusher.is_alive(), timeout)
            if not ok or self._committed_ticket < target:
                raise FlushTimeoutError(
                    f"flush of {self.table_name} did not finish in {timeout}s: {self._pending_rows} events pending"
                    + (f"; last error: {self._last_error}" if self._last_error else "")
                )
        self._raise_rejections()

    def close(self) -> None:
        """Flush, stop the threads, release the WAL. Raises if events could not be committed."""
        with self._lock:
            if self._closed or self._closing:
                return
            self._closing = True  # no new events from here on; let the ones already queued land first
            self._leader_cv.wait_for(lambda: not self._inbox and not self._leader)
        error: BaseException | None = None
        rejected: RejectedBatchError | None = None
        try:
            self.flush(timeout=self.close_timeout)
        except RejectedBatchError as e:
            rejected = e  # raised below, once the threads are stopped and the folders released
        except BaseException as e:  # noqa: BLE001 - reported below, after the threads are stopped
            error = e
        with self._lock:
            self._stop_ager = True
            self._ager_cv.notify()
        self._ager.join()
        with self._lock:
            self._stop_flusher = True
            self._flusher_cv.notify()
        self._flusher.join()
        for wal in list(self._adopted):
            wal.close()
        if self._wal is not None:
            self._wal.close()
        with self._lock:
            self._closed = True
            pending = self._pending_rows
            self._space_cv.notify_all()
        if error is not None:
            where = (
                f"kept in the WAL {self._wal.folder}, committed when a writer next opens it"
                if self._wal is not None
                else "lost: this writer was not durable"
            )
            raise StorageError(f"writer closed with {pending} event(s) not committed ({where}): {error}") from error
        if rejected is not None:
            raise rejected
        self._raise_rejections()

    def stats(self) -> WriterStats:
        with self._lock:
            return WriterStats(
                writer_id=self.writer_id,
                table=self.table_name,
                durable=self.durable,
                wal_dir=str(self._wal.folder) if self._wal else None,
                pending=self._pending_rows,
                last_commit_seconds=self._last_commit_seconds,
                last_error=self._last_error,
                **self._counters,
            )

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raise_rejections(self) -> None:
        with self._lock:
            reasons, self._unreported = self._unreported, []
        if reasons:
            raise RejectedBatchError(
                f"{self.table_name}: {len(reasons)} batch(es) could not be committed and were set aside; "
                f"every other batch was committed. {' '.join(reasons)}"
            )

    # -- validation ------------------------------------------------------------------------
    def _validate(self, events: Any) -> pa.Table:
        if self._is_events:
            if isinstance(events, pa.RecordBatch):
                events = pa.Table.from_batches([events])
            if isinstance(events, pa.Table) and "ingested_at" not in events.column_names:
                # Vectorised stamp: to_events would build it from a Python list, 10x slower than the rest.
                now = pa.scalar(datetime.now(UTC), TS)
                events = events.append_column("ingested_at", pc.fill_null(pa.nulls(events.num_rows, TS), now))
            return to_events(events, unknown=self.unknown)
        return rows_to_table(events, self._arrow_schema)

    def _check_open(self) -> None:
        if self._closing or self._closed:
            raise IcebergdoError("writer is closed; events not accepted")

    # -- leader: WAL + group commit + sealing; ager thread ---------------------------------------
    def _new_batch(self) -> _Batch:
        with self._lock:
            self._ticket += 1
            seq, self._next_seq = self._next_seq, self._next_seq + 1
            return _Batch(ticket=self._ticket, seq=seq, batch_id=str(ULID()), writer_id=self.writer_id, wal=self._wal)

    def _seal_as_leader(self, reason: str) -> int:
        """Wait to be the leader, seal the current batch if it has events; the last sealed batch's ticket."""
        with self._lock:
            while self._leader:
                self._leader_cv.wait()
            self._leader = True
        try:
            cur = self._current
            due = reason != "age" or (cur.oldest is not None and time.monotonic() >= cur.oldest + self.max_age)
            if cur.rows and due:
                self._seal(cur, reason)
        finally:
            with self._lock:
                self._leader = False
                self._leader_cv.notify_all()
        with self._lock:
            return self._last_sealed_ticket

    def _ager_loop(self) -> None:
        """Seal the current batch once its oldest event is `max_age` old."""
        while True:
            with self._lock:
                if self._stop_ager:
                    return
                oldest = self._current.oldest
                wait = None if oldest is None else oldest + self.max_age - time.monotonic()
                if wait is None or wait > 0:
                    self._ager_cv.wait(wait)
                    continue
            self._seal_as_leader("age")

    def _absorb(self, items: list[_Waiter]) -> None:
        """Write every waiting batch to the WAL, fsync once, add them to the current batch."""
        try:
            self._absorb_into(self._current, items)
        except BaseException as e:  # noqa: BLE001 - every caller of the group gets the error
            err = e if isinstance(e, IcebergdoError) else StorageError(f"WAL write failed: {commit.describe(e)}")
            with self._lock:
                for it in items:
                    if it.table is not None:
                        self._pending_rows -= it.table.num_rows
                        self._pending_bytes -= it.table.nbytes
                    it.error = err
                self._space_cv.notify_all()
            for it in items:
                it.done.set()

    def _absorb_into(self, cur: _Batch, items: list[_Waiter]) -> None:
        groups: list[list[pa.Table]] = []
        for it in items:  # consecutive batches with one schema become one IPC record batch
            assert it.table is not None
            if groups and groups[-1][0].schema.equals(it.table.schema):
                groups[-1].append(it.table)
            else:
                groups.append([it.table])
        tables = [g[0] if len(g) == 1 else pa.concat_tables(g) for g in groups]
        if self._wal is not None:
            assert cur.seq is not None
            touched: list[SegmentWriter] = []
            for t in tables:
                seg = cur.segments[-1] if cur.segments and cur.segments[-1].schema.equals(t.schema) else None
                if seg is None:
                    seg = self._wal.open_segment(cur.seq, cur.batch_id, len(cur.segments), t.schema)
                    cur.segments.append(seg)
                    cur.paths.append(seg.path)
                seg.write(t)
                if seg not in touched:
                    touched.append(seg)
            for seg in touched:
                seg.sync()
            with self._lock:
                self._counters["wal_syncs"] += len(touched)
        now = time.monotonic()
        rows = sum(t.num_rows for t in tables)
        cur.tables.extend(tables)
        cur.rows += rows
        cur.nbytes += sum(t.nbytes for t in tables)
        with self._lock:
            if cur.oldest is None:
                cur.oldest = now
                self._ager_cv.notify()
            self._counters["accepted"] += rows
        for it in items:
            it.table = None  # the batch holds the data now
            it.done.set()

    def _seal(self, cur: _Batch, reason: str) -> None:
        for seg in cur.segments:
            seg.close()
        cur.segments = []
        cur.reason = reason
        nxt = self._new_batch()
        with self._lock:
            self._sealed.append(cur)
            self._last_sealed_ticket = cur.ticket
            if reason == "age":
                self._counters["age_flushes"] += 1
            self._flusher_cv.notify()
        self._current = nxt

    def _replay(self, properties: Mapping[str, str], wal: WriteAheadLog, *, own: bool) -> None:
        """Queue the batches a previous run left in `wal`, in commit order; the flusher skips the committed ones.

        Numbered batches keep their numbers: the commit consults the ledger. Batches of an older
        WAL version (no number) are looked up in the snapshot history first (the only ledger they
        have): found ones are queued without a number (so their post-commit hooks still run, and
        nothing is committed); the others get the next numbers, durably, before anything commits.
        """
        lefts = wal.leftovers()
        for left in [b for b in lefts if not b.rows]:
            wal.delete(left.paths)
        lefts = [b for b in lefts if b.rows]
        upto = ledger.committed_upto(properties, wal.writer_id)
        nxt = ledger.next_seq(upto, [b.seq for b in lefts if b.seq is not None])
        legacy = [b for b in lefts if b.seq is None]
        if legacy:
            history = committed_batch_ids(self.tables.table(self.table_name))
            for b in legacy:
                if b.batch_id not in history:
                    wal.renumber(b, nxt)
                    nxt += 1
        if own:
            self._next_seq = nxt
        queued = sorted(lefts, key=lambda b: (b.seq is not None, b.seq or 0))
        for left in queued:
            self._ticket += 1
            batch = _Batch(
                ticket=self._ticket, seq=left.seq, batch_id=left.batch_id, writer_id=wal.writer_id, wal=wal,
                tables=left.tables, rows=left.rows, nbytes=sum(t.nbytes for t in left.tables), paths=left.paths,
                replayed=True, reason="replay",
            )
            self._sealed.append(batch)
            self._last_sealed_ticket = batch.ticket
            self._pending_rows += batch.rows
            self._pending_bytes += batch.nbytes
            self._counters["replayed_batches"] += 1
            log.info("writer %s: replaying batch %s #%s (%d events) from %s", self.writer_id, left.batch_id, left.seq, left.rows, wal.folder)
        if not own:
            if queued:
                self._adopted[wal] = len(queued)
                self._counters["adopted_folders"] += 1
                log.warning("writer %s: adopted the abandoned WAL folder %s (%d batch(es) to replay)", self.writer_id, wal.folder, len(queued))
            else:
                wal.close()

    # -- flusher thread: one commit per sealed batch, retried with backoff ------------------------
    def _flusher_loop(self) -> None:
        failures = 0
        while True:
            with self._lock:
                while not self._sealed and not self._stop_flusher:
                    self._flusher_cv.wait()
                if not self._sealed or (self._stop_flusher and self._closing and failures):
                    return  # nothing left, or close() already gave up on a failing store
                batch = self._sealed[0]
            try:
                self._commit(batch)
            except Exception as e:  # noqa: BLE001 - retried with backoff and reported, never dropped
                if commit.is_permanent(e):
                    self._reject(batch, e)
                    failures = 0
                    self._done(batch)
                    continue
                failures += 1
                backoff = backoff_after(failures)
                with self._lock:
                    self._last_error = f"{type(e).__name__}: {commit.describe(e)}"
                    self._counters["retries"] += 1
                    self._commit_cv.notify_all()
                log.warning("writer %s: flush of batch %s (%d events) failed, retrying in %.1fs: %s",
                            self.writer_id, batch.batch_id, batch.rows, backoff, commit.describe(e))
                with self._lock:
                    self._flusher_cv.wait_for(lambda: self._stop_flusher or self._kick, timeout=backoff)
                    self._kick = False
                continue
            failures = 0
            self._done(batch)

    def _done(self, batch: _Batch) -> None:
        """A batch left the queue (committed, found committed, or dead-lettered)."""
        batch.tables = []  # free the memory
        with self._lock:
            self._sealed.popleft()
            self._pending_rows -= batch.rows
            self._pending_bytes -= batch.nbytes
            self._committed_ticket = batch.ticket
            self._space_cv.notify_all()
            self._commit_cv.notify_all()
        wal = batch.wal
        if wal is not None and wal in self._adopted:
            self._adopted[wal] -= 1
            if self._adopted[wal] <= 0:
                del self._adopted[wal]
                wal.close()  # replayed to the end: free for any writer to take
                log.info("writer %s: finished replaying the adopted WAL folder %s", self.writer_id, wal.folder)

    def _reject(self, batch: _Batch, error: BaseException) -> None:
        """Set a batch that can never commit aside (dead letter) and say how to look at it."""
        reason = commit.describe(error).rstrip(".")
        if batch.wal is not None:
            folder = batch.wal.reject(batch.seq, batch.batch_id, batch.paths, {
                "reason": reason, "error": type(error).__name__, "table": self.table_name, "writer_id": batch.writer_id,
                "rows": batch.rows, "rejected_at": datetime.now(UTC).isoformat(),
            })
            where = (f"batch {batch.batch_id} ({batch.rows} events) was moved to {folder}: {reason}. "
                     f"Inspect with `icebergdo wal list`, commit it after fixing the cause with `icebergdo wal retry {batch.batch_id}` "
                     f"(`--unknown keep` adds new columns), or delete it with `icebergdo wal drop {batch.batch_id}`.")
        else:
            where = f"batch {batch.batch_id} ({batch.rows} events) was dropped (this writer is not durable): {reason}."
        log.error("writer %s: %s", self.writer_id, where)
        with self._lock:
            self._counters["rejected_batches"] += 1
            self._counters["rejected_events"] += batch.rows
            self._last_error = f"{type(error).__name__}: {reason}"
            self._unreported.append(where)

    def _commit(self, batch: _Batch) -> None:
        t0 = time.monotonic()
        batch.attempts += 1
        try:
            data = batch.tables[0] if len(batch.tables) == 1 else pa.concat_tables(batch.tables, promote_options="default")
            if self.unknown == "keep":
                self._evolve(data.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError, TypeError) as e:
            raise BadInputError(f"{self.table_name}: batch cannot be prepared for commit: {commit.describe(e)}") from None
        # A replayed or retried batch may have landed before the crash/failure: `Tables.append` finds it in
        # the ledger (or, without a sequence, in the history) and commits nothing. Its post-commit hooks
        # (CDC routing) run either way: after a crash they may not have run.
        # Each data file is written in `ts` order (the table's sort order), gathered from the batch as
        # it is written (`datafiles.write_rows`): the batch itself is never re-ordered as a whole.
        result = self.tables.append(
            self.table_name, data, batch_id=batch.batch_id, writer_id=batch.writer_id,
            writer_seq=batch.seq if batch.wal is not None else None, upkeep=self.upkeep,
            sort_by="ts" if "ts" in data.column_names else None,
        )
        if result.already_committed and not batch.replayed and batch.attempts == 1 and batch.wal is not None:
            self._renumber(batch)  # never tried before, yet "committed": its number was stale, not its data
        if result.already_committed:
            log.info("writer %s: batch %s #%s already committed; not committing it again", self.writer_id, batch.batch_id, batch.seq)
        self._finish(batch, t0, files=result.files, skipped=result.already_committed)

    def _renumber(self, batch: _Batch) -> None:
        """Defence in depth: a batch this writer made, never tried, found in the ledger. Another holder of
        this writer id committed that number (the ledger is ahead of us): give the batch (and every
        later one) numbers above the ledger and retry; its events are never dropped."""
        assert batch.wal is not None and batch.seq is not None
        upto = ledger.committed_upto(self.tables.table(self.table_name).metadata.properties, batch.writer_id) or 0
        with self._lock:
            new = max(upto + 1, self._next_seq)
            self._next_seq = new + 1
        log.error("writer %s: batch %s was numbered %d but the ledger is already at %d; renumbering it %d",
                  self.writer_id, batch.batch_id, batch.seq, upto, new)
        batch.paths = batch.wal.rename(batch.paths, batch.batch_id, new)
        batch.seq = new
        raise StorageError(f"batch {batch.batch_id} renumbered {new} (the ledger was ahead of this writer); committing it again")

    def _finish(self, batch: _Batch, t0: float, *, files: int | None, skipped: bool) -> None:
        if batch.wal is not None:
            batch.wal.delete(batch.paths)
        seconds = time.monotonic() - t0
        with self._lock:
            self._counters["flushed"] += batch.rows
            if skipped:
                self._counters["skipped_batches"] += 1
            else:
                self._counters["commits"] += 1
                self._counters["files"] += files or 0
            self._last_commit_seconds = seconds
            self._last_error = None
        if not skipped:
            log.info("writer %s: flushed %d events to %s in %d file(s), %.3fs (batch %s #%s, trigger %s)",
                     self.writer_id, batch.rows, self.table_name, files or 0, seconds, batch.batch_id, batch.seq, batch.reason)

    def _evolve(self, schema: pa.Schema) -> None:
        """`unknown="keep"`: add new top-level columns to the table before committing them."""
        added = self.tables.add_columns(self.table_name, schema)
        if added:
            log.info("writer %s: added column(s) %s to %s", self.writer_id, ", ".join(added), self.table_name)


def wal_root(config: Config) -> Path:
    """Where default WAL folders live: `{home}/wal` for an embedded lakehouse, else a per-catalog
    folder in the user's state dir (`$XDG_STATE_HOME/icebergdo/wal/{hash of catalog + warehouse}`)."""
    if config.home is not None:
        return config.home / "wal"
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    key = hashlib.sha256(f"{config.catalog_uri}|{config.warehouse}".encode()).hexdigest()[:16]
    return state / "icebergdo" / "wal" / key


def default_wal_dir(tables: Tables, table: str) -> Path:
    """The root of `table`'s default WAL folders: `{wal_root}/{table}/{writer id}/` (see `wal.claim`)."""
    return wal_root(tables.config) / table


def rows_to_table(rows: Any, schema: pa.Schema) -> pa.Table:
    """Validate rows for a table that is not `events.raw`: every field must fit its column."""
    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    if isinstance(rows, pa.Table):
        unknown = [c for c in rows.column_names if c not in schema.names]
        if unknown:
            raise BadInputError(f"Arrow batch: unknown column(s) {', '.join(map(repr, unknown))}")
        arrays = []
        for f in schema:
            col = rows.column(f.name) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
            if not f.nullable and col.null_count:
                raise BadInputError(f"Arrow batch: column {f.name!r} is required but has null value(s)")
            try:
                arrays.append(col.cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise BadInputError(f"Arrow batch: column {f.name!r}: {e}") from None
        return pa.Table.from_arrays(arrays, schema=schema)
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise BadInputError(f"row #{i + 1}: expected a dict, got {type(row).__name__}")
        unknown = [k for k in row if k not in schema.names]
        if unknown:
            raise BadInputError(f"row #{i + 1}: unknown field(s) {', '.join(map(repr, unknown))}")
    arrays = []
    for f in schema:
        values = [row.get(f.name) for row in rows]
        if not f.nullable and any(v is None for v in values):
            i = next(i for i, v in enumerate(values) if v is None)
            raise BadInputError(f"row #{i + 1}: field {f.name!r} is required")
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            raise BadInputError(f"field {f.name!r}: {e}") from None
    return pa.Table.from_arrays(arrays, schema=schema)


__all__ = [
    "BATCH_ID_PROPERTY",
    "RejectedBatchError",
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ROWS",
    "WRITER_ID_PROPERTY",
    "BackpressureError",
    "FlushTimeoutError",
    "Writer",
    "WriterStats",
    "committed_batch_ids",
]
