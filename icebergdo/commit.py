"""Idempotent appends for many writers: uploads in parallel, one short locked commit, never a double commit.

An append is two steps (`icebergdo.iceberg.datafiles`): write and upload the data files, then
commit them in one snapshot. Only the second step takes the table's commit lock (`commit_lock`),
so writers of one table upload in parallel and queue only for the metadata commit; inside the
lock the table is re-validated (refreshed if another writer committed meanwhile; files written
against an older schema or partition spec are written again).

pyiceberg already retries a commit that lost an optimistic-concurrency race (`commit.retry.*`
table properties). What it cannot do is recover from a failure whose outcome is unknown (the
catalog or the object store went away mid-commit) or from running out of its own retries under
heavy contention. This module adds one loop above it, and two ways to know whether a batch landed:

- the exactly-once ledger (`icebergdo.ledger`), for durable writers: a batch numbered `seq` by
  writer `W` is committed together with the table property "W committed up to seq", and the
  commit is guarded so it is refused when the ledger already covers it. O(1), independent of
  snapshot history, so expiry can be as aggressive as the table needs;
- the snapshot summary property `icebergdo.batch-id` (a ULID; generated when the caller gives
  none), for callers without a ledger (`Lakehouse.append_events(batch_id=...)`): a batch id
  found in the snapshots still in the metadata is not committed again. This only reaches as far
  back as snapshot retention.

Before re-trying after any failure the table is reloaded and the batch looked up first. Data
files of an attempt known not to have landed are reused (or deleted when they cannot be); files
of an attempt whose outcome is unknown are left in place (they may be referenced) for orphan
cleanup.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from ulid import ULID

from icebergdo import ledger
from icebergdo.config import Config
from icebergdo.errors import BadInputError, NotFoundError, StorageError
from icebergdo.iceberg import datafiles
from icebergdo.iceberg.catalog import accepts_own_requirements
from icebergdo.redact import safe_message

log = logging.getLogger(__name__)

BATCH_ID = "icebergdo.batch-id"
WRITER_ID = "icebergdo.writer-id"
WRITER_SEQ = "icebergdo.writer-seq"

# Table properties that tune this layer (pyiceberg's own are `commit.retry.*`).
ATTEMPTS_PROPERTY = "icebergdo.commit.attempts"
BASE_DELAY_PROPERTY = "icebergdo.commit.base-delay-ms"
MAX_DELAY_PROPERTY = "icebergdo.commit.max-delay-ms"
LOCK_PROPERTY = "icebergdo.commit.lock"  # "true" (default) or "false"
LOCK_TIMEOUT_S = 60.0

# Process-wide counters, for benchmarks and logs: conflict retries pyiceberg did, retries we did,
# batches found already committed.
_stats: dict[str, float] = {}
_stats_lock = threading.Lock()


def _count(key: str, n: float = 1) -> None:
    with _stats_lock:
        _stats[key] = _stats.get(key, 0) + n


def stats(reset: bool = False) -> dict[str, float]:
    """Counters since start (or the last reset): `pyiceberg_conflict_retries`, `retries`, `already_committed`,
    `commits`, and seconds spent `upload_s` (writing data files, outside the lock), `lock_wait_s` (queueing
    for the commit lock) and `locked_s` (holding it: re-validation and the metadata commit)."""
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
        return random.uniform(0, self.ceiling(retry))

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number `retry`."""
        return min(self.max_delay_s, self.base_delay_s * (2 ** min(max(retry, 1) - 1, 62)))


@dataclass(frozen=True)
class CommitOutcome:
    """How an idempotent append ended: the snapshot holding the batch, and how we got there.

    `snapshot` is None only for a batch the ledger shows as committed whose snapshot has since
    been expired.
    """

    snapshot: Snapshot | None
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


def find_batch(table: Table, batch_id: str, writer_id: str | None = None, seq: int | None = None) -> Snapshot | None:
    """The snapshot that committed `batch_id` (or batch `seq` of `writer_id`), newest first; None if it
    is not in the history."""
    wanted_seq = str(seq) if writer_id and seq is not None else None
    for snap in sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms, reverse=True):
        props = snap.summary.additional_properties if snap.summary else {}
        if props.get(BATCH_ID) == batch_id:
            return snap
        if wanted_seq is not None and props.get(WRITER_SEQ) == wanted_seq and props.get(WRITER_ID) == writer_id:
            return snap
    return None


def landed(table: Table, batch_id: str, writer_id: str | None = None, seq: int | None = None, *, history: bool = True) -> tuple[bool, Snapshot | None]:
    """Is the batch in `table` (as loaded)? (answer, its snapshot if still in the history).

    The ledger answers first when it has an entry for the writer; otherwise (no ledger, or an
    entry pruned for a writer gone a long time) the snapshot summaries are searched when
    `history` is set.
    """
    if writer_id and seq is not None:
        known = ledger.is_committed(table.metadata.properties, writer_id, seq)
        if known is not None:
            return known, find_batch(table, batch_id, writer_id, seq) if known else None
    if history:  # by batch id only: a writer's sequence numbers may restart after its entry was pruned
        snap = find_batch(table, batch_id)
        return snap is not None, snap
    return False, None


# Failures worth another attempt: lost races, unknown outcomes, and I/O or database trouble.
def _transient_types() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as SATimeoutError

    return (CommitFailedException, CommitStateUnknownException, OSError, DBAPIError, SATimeoutError, StorageError)


def is_permanent(exc: BaseException) -> bool:
    """Will retrying this failure ever help? No for input that does not fit the table (wrong schema,
    a value that cannot be written) and for a table that does not exist; yes for everything else
    (storage, catalog, races), which a buffered writer retries with backoff."""
    return isinstance(exc, (BadInputError, NotFoundError))


def _safe(exc: BaseException, config: Config | None) -> str:
    return safe_message(exc, config.secrets() if config is not None else ())


def describe(exc: BaseException) -> str:
    """An error's text for a message: never empty (some exceptions carry no text), the class otherwise."""
    text = str(exc).strip()
    return text if text else type(exc).__name__


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


class _Pauses:
    """Process-local pauses of a table's commits: the writer's upkeep commits without racing our own appends.

    An upkeep round (compaction, manifest merge, expiry) commits snapshots built against the table
    head; appends from the same process landing every few hundred milliseconds would make those
    commits lose every race (measured: a 14 s compaction commit while appends streamed). During a
    round, this process's appends wait before taking the commit lock, but never longer than the
    pause's budget: after it they go ahead and the round's commits retry as usual.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._until: dict[str, float] = {}

    @contextlib.contextmanager
    def pause(self, table: str, max_s: float) -> Iterator[None]:
        with self._cv:
            self._until[table] = time.monotonic() + max_s
        try:
            yield
        finally:
            with self._cv:
                self._until.pop(table, None)
                self._cv.notify_all()

    def wait(self, table: str) -> float:
        """Block while `table` is paused (at most until its budget ends); the seconds waited."""
        started = time.monotonic()
        with self._cv:
            while (until := self._until.get(table)) is not None and (left := until - time.monotonic()) > 0:
                self._cv.wait(left)
        return time.monotonic() - started


_pauses = _Pauses()


def pause_commits(table: str, max_s: float) -> contextlib.AbstractContextManager[None]:
    """`with pause_commits(name, 5.0):` this process's appends to `name` wait (at most `max_s`)."""
    return _pauses.pause(table, max_s)


def _write(table: Table, batch: pa.Table, what: str, sort_by: str | None = None) -> datafiles.PreparedAppend:
    """Write the batch's data files; a batch that does not fit the table is `BadInputError` (never retried).

    Only this step's ValueError/TypeError mean bad input: the same exceptions from deeper in a
    commit are failures of ours or pyiceberg's, and must not set a batch aside as unfit.
    """
    try:
        return datafiles.write_append(table, batch, sort_by)
    except (ValueError, TypeError) as e:
        raise BadInputError(f"{what}: batch does not fit the table schema: {describe(e)}") from None


def append_idempotent(
    load_table: Callable[[], Table],
    batch: pa.Table,
    *,
    table: Table | None = None,
    snapshot_properties: dict[str, str] | None = None,
    batch_id: str | None = None,
    writer_id: str | None = None,
    writer_seq: int | None = None,
    policy: RetryPolicy | None = None,
    config: Config | None = None,
    what: str = "append",
    lock: Callable[[], contextlib.AbstractContextManager[bool]] | None = None,
    current_location: Callable[[], str | None] | None = None,
    sort_by: str | None = None,
    reused: bool = False,
) -> CommitOutcome:
    """Append `batch` in one snapshot tagged with its batch id, at most once, retrying transient failures.

    `load_table` returns a freshly loaded table (called before each retry, and first unless `table`
    is given). The data files are written first, outside `lock` (see `commit_lock`); the lock is
    held only for the metadata commit, after which `current_location` (the catalog's current
    metadata location, one query) tells whether the table must be reloaded first; without it the
    table is always reloaded under the lock. `reused`: `table` was not loaded for this call (the
    caller kept it from its last commit), so a batch that does not fit it is tried once more on the
    freshly loaded table before it counts as bad input (another client may have evolved the schema).
    Each data file's
    rows are written in `sort_by` order (`datafiles.write_append`); `batch` itself is not reordered.

    With `writer_id` (a ULID) and `writer_seq`, the commit also advances the writer's ledger
    entry and is refused when the ledger already covers `writer_seq` (see `icebergdo.ledger`).
    Without them, a batch id the caller supplied that is already in the snapshot history returns
    that snapshot without committing. Errors that are not transient (bad input) propagate as they
    are (a batch that does not fit the table's schema: `BadInputError`); transient ones that
    outlast the retries become a `StorageError` that says whether the outcome is known.
    """
    props = dict(snapshot_properties or {})
    caller_batch = batch_id or props.get(BATCH_ID)
    batch_id = caller_batch or new_batch_id()
    props[BATCH_ID] = batch_id
    if writer_id:
        props[WRITER_ID] = writer_id
    guard = None
    ledger_update: dict[str, str] | None = None
    ledger_key = ""
    if writer_id and writer_seq is not None:
        props[WRITER_SEQ] = str(writer_seq)
        ledger_key = ledger.key(writer_id)  # raises for a writer id that is not a ULID
        guard = datafiles.LedgerGuard(writer_id=writer_id, seq=writer_seq)
    transient = _transient_types()
    if table is None:
        table = call_with_retry(load_table, what=f"{what}: loading the table", policy=policy, config=config)
    policy = policy or RetryPolicy.from_properties(table.metadata.properties)

    def already(table: Table, attempts: int, snap: Snapshot | None, why: str) -> CommitOutcome:
        _count("already_committed")
        log.log(logging.WARNING if attempts else logging.INFO, "%s: batch %s %s; not committing it again", what, batch_id, why)
        return CommitOutcome(snap, batch_id, attempts, True, table)

    done, snap = landed(table, batch_id, writer_id, writer_seq, history=bool(caller_batch))
    if done:
        return already(table, 0, snap, f"is already committed (snapshot {snap.snapshot_id if snap else 'expired'})")

    last: BaseException | None = None
    unknown = False  # did any failed attempt possibly land?
    prepared: datafiles.PreparedAppend | None = None
    for attempt in range(1, policy.attempts + 1):
        if attempt > 1:
            _count("retries")
            time.sleep(policy.delay(attempt - 1))
            try:
                table = load_table()
            except transient as e:
                last = e
                continue  # catalog still unreachable: try again after the next backoff
            if unknown:
                done, snap = landed(table, batch_id, writer_id, writer_seq)
                if done:
                    return already(table, attempt - 1, snap, f"of attempt {attempt - 1} had landed after all")
        committing = False
        try:
            t0 = time.monotonic()
            if prepared is None or not datafiles.still_valid(table.metadata, prepared):
                if prepared is not None:
                    datafiles.delete_files(table.io, prepared.files)
                try:
                    prepared = _write(table, batch, what, sort_by)  # the uploads: outside the lock
                except BadInputError:
                    if not reused:
                        raise
                    reused = False
                    table = table.refresh()  # kept from our last commit: the schema may have moved since
                    prepared = _write(table, batch, what, sort_by)
            _count("upload_s", time.monotonic() - t0)
            _pauses.wait(what)  # an upkeep round of this process is committing: let it finish (bounded)
            t1 = time.monotonic()
            with lock() if lock is not None else contextlib.nullcontext(False) as waited:
                t2 = time.monotonic()
                _count("lock_wait_s", t2 - t1)
                if waited or current_location is None or current_location() != table.metadata_location:
                    table = table.refresh()  # others committed while we uploaded or queued (or we cannot tell)
                if guard is not None and not accepts_own_requirements(table.catalog):
                    # No commit-time guard on this catalog (REST): check the ledger on the fresh state instead.
                    done, snap = landed(table, batch_id, writer_id, writer_seq, history=False)
                    if done:
                        datafiles.delete_files(table.io, prepared.files)
                        return already(table, attempt, snap, "is already in the ledger")
                if not datafiles.still_valid(table.metadata, prepared):
                    datafiles.delete_files(table.io, prepared.files)
                    prepared = _write(table, batch, what, sort_by)
                if guard is not None:  # "W committed up to seq", stamped now (pruning needs the time)
                    ledger_update = {ledger_key: ledger.encode(guard.seq, int(time.time() * 1000))}
                committing = True
                try:
                    table = datafiles.commit_append(table, prepared, props, set_properties=ledger_update, guard=guard)
                finally:
                    _count("locked_s", time.monotonic() - t2)
        except datafiles.AlreadyCommitted:
            datafiles.delete_files(table.io, prepared.files if prepared else [])  # ours were never referenced
            table = call_with_retry(load_table, what=f"{what}: loading the table", policy=policy, config=config)
            return already(table, attempt, find_batch(table, batch_id, writer_id, writer_seq), "is already in the ledger")
        except transient as e:
            last = e
            if isinstance(e, CommitFailedException) or not committing:
                pass  # known not to have landed: the files written are still ours to commit
            else:
                unknown = True
                prepared = None  # they may be referenced by a commit that landed: never reuse or delete them
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

    if prepared is not None and not unknown:
        datafiles.delete_files(table.io, prepared.files)  # never committed: not ours to leave behind
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
    with _hold(catalog, identifier, "", shared=False, timeout_s=timeout_s) as held:
        yield held


def uploads_lock(catalog: Any, identifier: str, timeout_s: float = LOCK_TIMEOUT_S) -> Callable[[], contextlib.AbstractContextManager[bool]]:
    """A per-table lock an append holds *shared* from writing its first data file until those files are
    committed or given up (many appends at once), and orphan removal below its safety window takes
    *exclusive* (`exclusive_uploads_lock`), so it never deletes a data file an append is about to commit.

    Data files are written before the commit lock is taken (uploads run in parallel), so the commit
    lock alone cannot protect them. A lock not obtained within `timeout_s` lets the append go on
    (yields False): it only ever waits for an orphan removal's few deletes.
    """
    return lambda: _hold(catalog, identifier, ".uploads", shared=True, timeout_s=timeout_s)


@contextlib.contextmanager
def exclusive_uploads_lock(catalog: Any, identifier: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[bool]:
    """`uploads_lock` taken exclusively: yields True once no append of this table has data files in flight."""
    with _hold(catalog, identifier, ".uploads", shared=False, timeout_s=timeout_s) as held:
        yield held


@contextlib.contextmanager
def _hold(catalog: Any, identifier: str, kind: str, *, shared: bool, timeout_s: float) -> Iterator[bool]:
    """A PostgreSQL session advisory lock or an flock (SQLite, REST: `_lock_file`), shared or exclusive;
    yields whether it is held (False when not obtained within `timeout_s`, or nowhere to lock)."""
    engine = getattr(catalog, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        with _pg_advisory(engine, _pg_key(identifier + kind), timeout_s, shared=shared) as got:
            yield got is not None and got[0]
        return
    path = _lock_file(catalog, identifier)
    if path is None:
        yield False
        return
    with _flocked(Path(f"{path}{kind}" if kind else path), fcntl.LOCK_SH if shared else fcntl.LOCK_EX, timeout_s) as got:
        yield got is not None and got[0]


@contextlib.contextmanager
def _pg_lock(engine: Any, key: int, timeout_s: float) -> Iterator[bool]:
    with _pg_advisory(engine, key, timeout_s) as got:
        if got is not None and not got[0]:
            log.info("commit lock not taken within %.0fs; committing optimistically", timeout_s)
        yield got is not None and got[0] and got[1]


@contextlib.contextmanager
def _pg_advisory(engine: Any, key: int, timeout_s: float, *, shared: bool = False) -> Iterator[tuple[bool, bool] | None]:
    """A PostgreSQL session advisory lock on `key`, waited for up to `timeout_s`, held for the block:
    (taken, had to wait), or None when the database cannot be reached (the caller's own work will
    meet, and report, the unreachable catalog). A session whose unlock fails is discarded: its lock
    goes with it."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    suffix = "_shared" if shared else ""
    try:
        con = engine.connect()
    except DBAPIError:
        yield None
        return
    taken = waited = False
    try:
        try:
            taken = bool(con.execute(text(f"SELECT pg_try_advisory_lock{suffix}(:k)"), {"k": key}).scalar())
            if not taken:
                waited = True
                con.execute(text(f"SET LOCAL lock_timeout = '{int(timeout_s * 1000)}ms'"))  # this transaction only
                con.execute(text(f"SELECT pg_advisory_lock{suffix}(:k)"), {"k": key})  # a session lock: outlives the commit
                taken = True
            con.commit()
        except DBAPIError as e:
            log.debug("advisory lock %s not taken: %s", key, type(e.orig).__name__ if e.orig else e)
            con.rollback()
        yield taken, waited
    finally:
        try:
            if taken:
                con.execute(text(f"SELECT pg_advisory_unlock{suffix}(:k)"), {"k": key})
                con.commit()
        except DBAPIError:
            con.invalidate()  # the session is gone, and its advisory lock with it
        finally:
            con.close()


@contextlib.contextmanager
def _file_lock(path: Path, timeout_s: float) -> Iterator[bool]:
    with _flocked(path, fcntl.LOCK_EX, timeout_s) as got:
        if got is None:
            yield False
        else:
            taken, waited = got
            yield waited if taken else True  # not taken: commit optimistically, from a refreshed table


@contextlib.contextmanager
def _flocked(path: Path, mode: int, timeout_s: float) -> Iterator[tuple[bool, bool] | None]:
    """`flock` `mode` (LOCK_SH/LOCK_EX) on the file at `path`, polling for up to `timeout_s`, held
    for the block: (taken, had to wait), or None when the file cannot be opened."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield None
        return
    try:
        deadline = time.monotonic() + timeout_s
        waited = taken = False
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                taken = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                waited = True
                time.sleep(0.005)
        try:
            yield taken, waited
        finally:
            if taken:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
