"""Idempotent appends for many writers: jittered retries above pyiceberg's, never a double commit.

pyiceberg already retries a commit that lost an optimistic-concurrency race (`commit.retry.*`
table properties). What it cannot do is recover from a failure whose outcome is unknown (the
catalog or the object store went away mid-commit) or from running out of its own retries under
heavy contention. This module adds one loop above it:

- every append carries the snapshot summary property `icebergdo.batch-id` (a ULID; generated
  when the caller gives none) and optionally `icebergdo.writer-id`;
- before re-trying after any failure, it reloads the table and looks for that batch id in the
  snapshot history: if it is there, the earlier attempt landed and nothing is committed again;
- a batch id the caller supplied that is already in the history is not committed again either,
  so replaying a batch after a crash is safe (`committed_batch_ids` lists them in bulk);
- data files written for a commit whose outcome is unknown are left in place (pyiceberg deletes
  only files of commits it knows failed); orphan cleanup removes them later.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from ulid import ULID

from icebergdo.config import Config
from icebergdo.errors import StorageError
from icebergdo.iceberg import datafiles
from icebergdo.redact import safe_message

log = logging.getLogger(__name__)

BATCH_ID = "icebergdo.batch-id"
WRITER_ID = "icebergdo.writer-id"

# Table properties that tune this layer (pyiceberg's own are `commit.retry.*`).
ATTEMPTS_PROPERTY = "icebergdo.commit.attempts"
BASE_DELAY_PROPERTY = "icebergdo.commit.base-delay-ms"
MAX_DELAY_PROPERTY = "icebergdo.commit.max-delay-ms"
LOCK_PROPERTY = "icebergdo.commit.lock"  # "true" (default) or "false"
LOCK_TIMEOUT_S = 60.0

# Process-wide counters, for benchmarks and logs: conflict retries pyiceberg did, retries we did,
# batches found already committed.
_stats: Counter[str] = Counter()
_stats_lock = threading.Lock()


def _count(key: str, n: int = 1) -> None:
    with _stats_lock:
        _stats[key] += n


def stats(reset: bool = False) -> dict[str, int]:
    """Counters since start (or the last reset): `pyiceberg_conflict_retries`, `retries`, `already_committed`, `commits`."""
    with _stats_lock:
        out = dict(_stats)
        if reset:
            _stats.clear()
    return out


class _ConflictRetryCounter(logging.Filter):
    """Counts pyiceberg's "Commit failed due to a concurrent update, retrying" and demotes it to DEBUG.

    With several writers those conflicts are routine, not warnings a user should see.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Commit failed due to a concurrent update"):
            _count("pyiceberg_conflict_retries")
            log.debug("pyiceberg: %s", record.getMessage())
            return False
        return True


_pyiceberg_table_log = logging.getLogger("pyiceberg.table")
if not any(isinstance(f, _ConflictRetryCounter) for f in _pyiceberg_table_log.filters):
    _pyiceberg_table_log.addFilter(_ConflictRetryCounter())


@dataclass(frozen=True)
class RetryPolicy:
    """Our attempts above pyiceberg's: full-jitter exponential backoff between them."""

    attempts: int = 3
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0

    @classmethod
    def from_properties(cls, props: dict[str, str]) -> RetryPolicy:
        d = cls()
        try:
            return cls(
                attempts=max(1, int(props.get(ATTEMPTS_PROPERTY, d.attempts))),
                base_delay_s=max(0.0, int(props.get(BASE_DELAY_PROPERTY, d.base_delay_s * 1000)) / 1000),
                max_delay_s=max(0.0, int(props.get(MAX_DELAY_PROPERTY, d.max_delay_s * 1000)) / 1000),
            )
        except ValueError:
            log.warning("ignoring malformed icebergdo.commit.* table properties")
            return d

    def delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (1-based): uniform in [0, min(max, base·2^(retry-1))]."""
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * (2 ** (retry - 1))))


@dataclass(frozen=True)
class CommitOutcome:
    """How an idempotent append ended: the snapshot holding the batch, and how we got there."""

    snapshot: Snapshot
    batch_id: str
    attempts: int
    already_committed: bool
    table: Table  # as loaded at the end: the committed state, or the state that already held the batch


def new_batch_id() -> str:
    return str(ULID())


def committed_batch_ids(table: Table, since_ms: int | None = None) -> set[str]:
    """Batch ids (`icebergdo.batch-id`) of every snapshot in `table`'s history, optionally since `since_ms`.

    Only snapshots still in the metadata count: pick `since_ms` inside the snapshot retention
    window. The table is used as loaded; reload it (`table.refresh()`) for the latest state.
    """
    out = set()
    for snap in table.metadata.snapshots:
        if since_ms is not None and snap.timestamp_ms < since_ms:
            continue
        batch = snap.summary.additional_properties.get(BATCH_ID) if snap.summary else None
        if batch:
            out.add(batch)
    return out


def find_batch(table: Table, batch_id: str) -> Snapshot | None:
    """The snapshot that committed `batch_id`, newest first; None if it is not in the history."""
    for snap in sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms, reverse=True):
        if snap.summary and snap.summary.additional_properties.get(BATCH_ID) == batch_id:
            return snap
    return None


# Failures worth another attempt: lost races, unknown outcomes, and I/O or database trouble.
def _transient_types() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as SATimeoutError

    return (CommitFailedException, CommitStateUnknownException, OSError, DBAPIError, SATimeoutError, StorageError)


def _safe(exc: BaseException, config: Config | None) -> str:
    return safe_message(exc, config.secrets() if config is not None else ())


def call_with_retry(
    fn: Callable[[], Any], *, what: str, policy: RetryPolicy | None = None, config: Config | None = None
) -> Any:
    """Run an idempotent call (e.g. loading a table) with jittered retries on transient failures."""
    policy = policy or RetryPolicy()
    transient = _transient_types()
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except transient as e:
            if attempt == policy.attempts:
                raise StorageError(f"{what} failed after {attempt} attempts: {_safe(e, config)}") from None
            _count("retries")
            time.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")


def append_idempotent(
    load_table: Callable[[], Table],
    batch: pa.Table,
    *,
    table: Table | None = None,
    snapshot_properties: dict[str, str] | None = None,
    batch_id: str | None = None,
    writer_id: str | None = None,
    policy: RetryPolicy | None = None,
    config: Config | None = None,
    what: str = "append",
    lock: Callable[[], contextlib.AbstractContextManager[bool]] | None = None,
) -> CommitOutcome:
    """Append `batch` in one snapshot tagged with its batch id, at most once, retrying transient failures.

    `load_table` returns a freshly loaded table (called before each retry, and first unless `table`
    is given). `lock` (see `commit_lock`) serialises writers of one table so they queue instead
    of losing optimistic races and backing off; correctness never depends on it. A batch
    id already present in the history (a replay, or an earlier attempt that did land) returns
    that snapshot without committing. Errors that are not transient (bad input) propagate as
    they are; transient ones that outlast the retries become a `StorageError` that says whether
    the outcome is known.
    """
    props = dict(snapshot_properties or {})
    caller_batch = batch_id or props.get(BATCH_ID)
    batch_id = caller_batch or new_batch_id()
    props[BATCH_ID] = batch_id
    if writer_id:
        props[WRITER_ID] = writer_id
    transient = _transient_types()
    if table is None:
        table = call_with_retry(load_table, what=f"{what}: loading the table", policy=policy, config=config)
    policy = policy or RetryPolicy.from_properties(table.metadata.properties)
    if caller_batch and (done := find_batch(table, batch_id)) is not None:
        _count("already_committed")
        log.info("%s: batch %s is already committed (snapshot %s); not committing it again", what, batch_id, done.snapshot_id)
        return CommitOutcome(done, batch_id, 0, True, table)

    last: BaseException | None = None
    unknown = False  # did any failed attempt possibly land?
    for attempt in range(1, policy.attempts + 1):
        if attempt > 1:
            _count("retries")
            time.sleep(policy.delay(attempt - 1))
            try:
                table = load_table()
            except transient as e:
                last = e
                continue  # catalog still unreachable: try again after the next backoff
            if unknown and (done := find_batch(table, batch_id)) is not None:
                _count("already_committed")
                log.warning("%s: attempt %d of batch %s had landed after all (snapshot %s)", what, attempt - 1, batch_id, done.snapshot_id)
                return CommitOutcome(done, batch_id, attempt - 1, True, table)
        try:
            with lock() if lock is not None else contextlib.nullcontext(False) as waited:
                if waited:
                    table.refresh()  # others committed while we queued: start from the latest snapshot
                datafiles.append(table, batch, props)
        except transient as e:
            last = e
            # CommitFailedException is the one failure known not to have landed.
            unknown = unknown or not isinstance(e, CommitFailedException)
            level = logging.INFO if isinstance(e, CommitFailedException) else logging.WARNING  # lost races are routine
            log.log(level, "%s: attempt %d/%d of batch %s failed: %s", what, attempt, policy.attempts, batch_id, _safe(e, config))
            continue
        _count("commits")
        snap = table.current_snapshot()
        if snap is None or not snap.summary or snap.summary.additional_properties.get(BATCH_ID) != batch_id:
            snap = find_batch(table, batch_id)
        if snap is None:  # pragma: no cover - pyiceberg returned without our snapshot in its metadata
            raise StorageError(f"{what}: commit of batch {batch_id} returned but its snapshot is not in the table metadata")
        return CommitOutcome(snap, batch_id, attempt, False, table)

    assert last is not None
    state = (
        f"its outcome is unknown: append again with batch id {batch_id} to finish it safely"
        if unknown
        else "nothing was committed; the table is at its last good snapshot"
    )
    raise StorageError(
        f"{what}: batch {batch_id} failed after {policy.attempts} attempts ({_safe(last, config)}); {state}"
    )


def lock_enabled(table: Table) -> bool:
    return table.metadata.properties.get(LOCK_PROPERTY, "true").strip().lower() not in ("false", "0", "no", "off")


def commit_lock(catalog: Any, identifier: str, timeout_s: float = LOCK_TIMEOUT_S) -> Callable[[], contextlib.AbstractContextManager[bool]]:
    """A per-table writer lock in the catalog itself, so writers of one table queue instead of racing.

    PostgreSQL: a session advisory lock (released by the server if this process dies); SQLite: an
    flock on a file beside the catalog database; a REST catalog (no database to lock in): an flock
    in the temp folder keyed by catalog URI and table, so writers on one machine queue and writers
    on others race as they would anyway. Anything else, or a lock not obtained within
    `timeout_s`, yields False and the append runs optimistically as it would without a lock: the
    lock only saves failed commits and backoff sleeps, the catalog's compare-and-swap is what
    keeps commits correct. The context yields True when it had to wait for the lock (the table
    has probably moved on: refresh it before appending).
    """
    engine = getattr(catalog, "engine", None)
    dialect = engine.dialect.name if engine is not None else ""
    if dialect == "postgresql":
        return lambda: _pg_lock(engine, _pg_key(identifier), timeout_s)
    if (path := _lock_file(catalog, identifier)) is not None:
        return lambda: _file_lock(path, timeout_s)
    return lambda: contextlib.nullcontext(False)


def _pg_key(identifier: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"icebergdo:{identifier}".encode(), digest_size=8).digest(), "big", signed=True)


def _lock_file(catalog: Any, identifier: str) -> Path | None:
    """The flock file of a table's commit lock: beside a SQLite catalog, or per machine for a REST catalog."""
    engine = getattr(catalog, "engine", None)
    if engine is not None and engine.dialect.name == "sqlite" and engine.url.database and engine.url.database != ":memory:":
        return Path(f"{engine.url.database}.{identifier}.lock")
    uri = getattr(catalog, "uri", None)
    if engine is None and isinstance(uri, str) and uri.startswith(("http://", "https://")):
        digest = hashlib.blake2b(f"{uri}|{identifier}".encode(), digest_size=12).hexdigest()
        return Path(tempfile.gettempdir()) / f"icebergdo-rest-{digest}.lock"
    return None


@contextlib.contextmanager
def exclusive_commit_lock(catalog: Any, identifier: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[bool]:
    """Hold the same per-table lock as `commit_lock`, yielding whether it is really held.

    For maintenance that must see no commit land while it works (orphan removal below its safety
    window): unlike `commit_lock`, a lock not obtained within `timeout_s` yields False instead of
    letting the caller go ahead optimistically, and the caller must then not act on its view.
    """
    engine = getattr(catalog, "engine", None)
    dialect = engine.dialect.name if engine is not None else ""
    if engine is not None and dialect == "postgresql":
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        key = _pg_key(identifier)
        con = engine.connect()
        held = False
        try:
            try:
                con.execute(text(f"SET LOCAL lock_timeout = '{int(timeout_s * 1000)}ms'"))  # this transaction only
                con.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})  # session lock: outlives the commit
                con.commit()
                held = True
            except DBAPIError:
                con.rollback()
            yield held
        finally:
            try:
                if held:
                    con.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    con.commit()
            except DBAPIError:
                con.invalidate()  # the session is gone, and its advisory lock with it
            finally:
                con.close()
        return
    path = _lock_file(catalog, identifier)
    if path is None:
        yield False
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.005)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _pg_lock(engine: Any, key: int, timeout_s: float) -> Iterator[bool]:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        con = engine.connect()
    except DBAPIError:
        yield False  # the append itself will meet (and report) the unreachable catalog
        return
    locked = waited = False
    try:
        try:
            locked = bool(con.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            if not locked:
                con.execute(text(f"SET lock_timeout = '{int(timeout_s * 1000)}ms'"))
                con.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                locked = waited = True
            con.commit()
        except DBAPIError as e:
            log.info("commit lock not taken (%s); committing optimistically", type(e.orig).__name__ if e.orig else e)
            con.rollback()
        yield waited
    finally:
        try:
            if locked:
                con.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                con.commit()
        except DBAPIError:
            con.invalidate()  # the session is gone, and its advisory lock with it
        finally:
            con.close()


@contextlib.contextmanager
def _file_lock(path: Path, timeout_s: float) -> Iterator[bool]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        deadline = time.monotonic() + timeout_s
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield True  # not locked: commit optimistically, from a refreshed table
                    return
                waited = True
                time.sleep(0.005)
        try:
            yield waited
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
