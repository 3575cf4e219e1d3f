"""The service's one durable writer, fed in groups: a request is acknowledged once its events are in the fsynced WAL.

Invariant: a 202 (or a WebSocket ack) is sent only after `Writer.extend` returned for a group holding
the request's events, and `extend` returns only when they are fsynced in the write-ahead log
(icebergdo/writer.py). Everything acknowledged therefore survives SIGKILL: the next writer on the
WAL folder commits it, exactly once (batch ids in the snapshot history).

Why groups: the writer already shares one fsync among concurrent callers, but each call costs a
thread hop, an Arrow build and a lock round trip, and on a busy server the event loop (which parses
every request) is the bottleneck. So requests hand over their parsed records (or, for webhooks and
CDC, a ready Arrow table) and one consumer takes everything queued and, in a worker thread,
validates it with one `events_from_rows` call and makes one `extend` call. While that call waits for
its fsync, the next requests queue up and form the next group, so the cost per event falls as the
load rises. Validation stays per request in what it decides: when the group does not validate,
each request is validated alone, the bad ones get their own 422 (naming their record and field)
and the rest of the group goes on. Two groups may be in flight at once so that one is prepared
while the other is fsynced. The writer accepts or refuses a group as a whole: when its pending
bound is reached (`block_timeout` 0 raises at once) every request of the group gets 429 with
`Retry-After`, and nothing of it was accepted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from icebergdo import layout
from icebergdo.errors import BackpressureError, BadInputError, IcebergdoError, StorageError
from icebergdo.lakehouse import Lakehouse
from icebergdo.schema import events_from_rows
from icebergdo.serve.bodies import invalid
from icebergdo.serve.http import HttpError
from icebergdo.serve.settings import Settings
from icebergdo.writer import Writer, WriterStats

log = logging.getLogger(__name__)
IN_FLIGHT_GROUPS = 2


@dataclass
class Pending:
    """One request's events: parsed records to validate (`rows`, `labels`) or an already validated `table`."""

    done: asyncio.Future[pa.Table]
    rows: list[Any] | None = None
    labels: Sequence[str] = ()
    table: pa.Table | None = None
    error: HttpError | None = None


def validate_group(items: list[Pending]) -> pa.Table | None:
    """Every item's table (validating the records of the whole group at once); the group to write, or None.

    Runs in a worker thread. Items whose records do not validate get `error` and are left out.
    """
    pending = [it for it in items if it.rows is not None]
    if pending:
        rows = [r for it in pending for r in it.rows or ()]
        labels = [label for it in pending for label in it.labels]
        try:
            table = events_from_rows(rows, labels=labels)
            offset = 0
            for it in pending:
                n = len(it.rows or ())
                it.table = table.slice(offset, n)
                offset += n
        except BadInputError:
            for it in pending:  # someone's record is bad: validate each request alone to tell whose
                try:
                    it.table = events_from_rows(it.rows or [], labels=it.labels)
                except BadInputError as e:
                    it.error = invalid(str(e))
    tables = [it.table for it in items if it.table is not None and it.table.num_rows]
    if not tables:
        return None
    # One contiguous record batch per group: the WAL writes (and zstd-compresses) each chunk as its own
    # IPC record batch, and the commit converts each chunk separately, so 100 one-event chunks cost ~100x.
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()


class Ingestor:
    """Owns the writer (opened on `start`, closed on `close`); `submit` returns once the events are durable."""

    def __init__(self, lh: Lakehouse, settings: Settings, wal_dir: Path) -> None:
        self.lh = lh
        self.settings = settings
        self.wal_dir = wal_dir
        self.writer: Writer | None = None
        self.groups = 0  # groups written (each one `extend`, one WAL fsync)
        self._queue: list[Pending] = []
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(IN_FLIGHT_GROUPS)
        self._executor = ThreadPoolExecutor(max_workers=IN_FLIGHT_GROUPS + 1, thread_name_prefix="icebergdo-serve-extend")
        self._consumer: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._closing = False

    def open_writer(self) -> Writer:
        """Open the durable writer (replays what a previous run left in the WAL). Blocking: call from a thread."""
        s = self.settings
        self.writer = self.lh.writer(
            layout.EVENTS_TABLE, wal_dir=self.wal_dir, durable=True,
            max_rows=s.max_rows, max_bytes=s.max_bytes, max_age=s.max_age,
            max_pending_rows=s.max_pending_rows, max_pending_bytes=s.max_pending_bytes,
            block_timeout=s.block_timeout, close_timeout=s.shutdown_timeout,
        )
        return self.writer

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.open_writer)
        self._consumer = asyncio.create_task(self._run(), name="icebergdo-serve-ingest")

    def stats(self) -> WriterStats | None:
        return self.writer.stats() if self.writer is not None else None

    @property
    def accepting(self) -> bool:
        return self.writer is not None and not self._closing

    async def submit(self, table: pa.Table) -> pa.Table:
        """Queue validated events; returns when they are durable, or raises `HttpError` (429/503)."""
        return await self._enqueue(Pending(self._future(), table=table))

    async def submit_rows(self, rows: list[Any], labels: Sequence[str]) -> pa.Table:
        """Queue parsed records; returns their validated table once durable, or raises `HttpError` (422/429/503)."""
        return await self._enqueue(Pending(self._future(), rows=rows, labels=labels))

    def _future(self) -> asyncio.Future[pa.Table]:
        if not self.accepting:
            raise HttpError(503, "shutting_down", "the server is shutting down; send to another instance or retry",
                            retry_after=self.settings.probe_interval)
        return asyncio.get_running_loop().create_future()

    async def _enqueue(self, item: Pending) -> pa.Table:
        self._queue.append(item)
        self._wake.set()
        return await item.done

    async def _run(self) -> None:
        while True:
            if not self._queue:  # the only wait: producers and close() set the event after changing the state
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            await self._slots.acquire()
            items, self._queue = self._queue, []
            task = asyncio.create_task(self._extend(items))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    def _validate_and_extend(self, items: list[Pending]) -> int:
        group = validate_group(items)
        if group is None:
            return 0
        assert self.writer is not None
        return self.writer.extend(group)

    async def _extend(self, items: list[Pending]) -> None:
        try:
            n = await asyncio.get_running_loop().run_in_executor(self._executor, self._validate_and_extend, items)
        except BaseException as e:  # noqa: BLE001 - every request of the group gets the same answer
            err = self._http_error(e)
            for it in items:
                if not it.done.done():
                    it.done.set_exception(it.error or err)
        else:
            self.groups += 1 if n else 0
            for it in items:
                if it.done.done():
                    continue
                if it.error is not None:
                    it.done.set_exception(it.error)
                else:
                    it.done.set_result(it.table if it.table is not None else events_from_rows([]))
        finally:
            self._slots.release()
            if self._queue:
                self._wake.set()

    def _http_error(self, e: BaseException) -> HttpError:
        stats = self.stats()
        if isinstance(e, BackpressureError):
            if stats is not None and stats.last_error:
                return HttpError(503, "unavailable", "commits are failing and the writer is full; nothing of this request was accepted",
                                 retry_after=max(self.settings.probe_interval, 1.0))
            wait = max(1.0, min(30.0, (stats.last_commit_seconds or 0.0) * 2 if stats else 1.0))
            return HttpError(429, "backpressure", "the writer is behind (pending bound reached); nothing of this request was accepted",
                             retry_after=wait)
        if isinstance(e, BadInputError):
            return HttpError(422, "invalid", str(e))
        if isinstance(e, StorageError):
            log.error("serve: write-ahead log write failed: %s", e)
            return HttpError(503, "wal_failed", "the write-ahead log could not be written; nothing of this request was accepted",
                             retry_after=self.settings.probe_interval)
        if isinstance(e, IcebergdoError):  # the writer is closed
            return HttpError(503, "shutting_down", "the server is shutting down", retry_after=self.settings.probe_interval)
        log.exception("serve: unexpected error while writing events", exc_info=e)
        return HttpError(500, "internal", f"unexpected error: {type(e).__name__}")

    async def close(self) -> BaseException | None:
        """Refuse new events, finish the queued ones, flush and commit, release the WAL. Returns the close error."""
        self._closing = True
        self._wake.set()
        if self._consumer is not None:
            await self._consumer
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        error: BaseException | None = None
        if self.writer is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, self.writer.close)
            except BaseException as e:  # noqa: BLE001 - reported by the caller (exit code), the events stay in the WAL
                error = e
        self._executor.shutdown(wait=False)
        return error
