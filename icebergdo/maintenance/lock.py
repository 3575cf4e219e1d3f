"""One maintainer per table, across processes and hosts: a lease with an expiry.

The invariant: while a maintainer works on a table, its row names it as owner with an expiry in
the future, and no other maintainer takes the row unless that owner is certainly gone.

- A lease, not a lock: the row carries an expiry (`ttl`), so a maintainer that died on another
  host frees its table after at most `ttl` seconds.
- A heartbeat thread renews the lease every `ttl / 3` while the holder works, so a single job
  longer than `ttl` keeps it (it used to be renewed only between jobs).
- A holder on *this* host whose process is gone (no such pid, a zombie, or the pid now belongs
  to a process started later) is taken over at once: a killed `maintain` does not block the
  next cron run for the whole TTL.
- `acquire(wait=...)` polls for a busy lease instead of giving up at once.

The same record remembers the last maintenance run (time and per-job summary) for `health`.
Two implementations of one contract (`Lease`), chosen by `table_lock` from the catalog:

- SQL catalog: `TableLock`, a row in the catalog's own database (`icebergdo_locks`), with all of
  the above;
- any other (a REST catalog: R2 Data Catalog, Polaris, ours): `icebergdo.iceberg.leases.RefLease`,
  a compare-and-swap through the Iceberg commit protocol alone (tags on a system table); it is
  renewed between jobs and waited for by polling, and frees itself only by expiring.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Self

from sqlalchemy import (
    Column,
    Float,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from icebergdo.errors import LockBusyError
from icebergdo.iceberg import leases

if TYPE_CHECKING:
    from icebergdo.tables import Tables

log = logging.getLogger(__name__)

LOCK_TABLE = "icebergdo_locks"
DEFAULT_TTL_S = 600.0
WAIT_POLL_S = 1.0  # how often a waiting maintainer looks again (jittered)

_meta = MetaData()
locks = Table(
    LOCK_TABLE,
    _meta,
    Column("catalog_name", String(255), primary_key=True),
    Column("table_name", String(255), primary_key=True),
    Column("owner", String(255), nullable=True),
    Column("expires_at", Float, nullable=True),
    Column("last_run_at", Float, nullable=True),
    Column("last_summary", Text, nullable=True),
)


def ensure_schema(engine: Engine) -> None:
    _meta.create_all(engine, checkfirst=True)


def _stat_field(pid: int, field: int) -> str | None:
    """Field `field` (numbered as in stat(5), from 3 on) of Linux `/proc/<pid>/stat`, or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[field - 3]  # after the command name, which may hold spaces
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None where unknown."""
    return _stat_field(pid, 22)


def _process_state(pid: int) -> str | None:
    """The state letter of `pid` (`Z`: a zombie, killed but not reaped), or None where unknown."""
    return _stat_field(pid, 3)


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: `host:pid:start:token` (`start` empty where the OS does not tell)."""

    host: str
    pid: int
    start: str
    token: str

    @classmethod
    def parse(cls, owner: str) -> Holder | None:
        parts = owner.split(":")
        try:
            if len(parts) == 4:
                return cls(parts[0], int(parts[1]), parts[2], parts[3])
            if len(parts) == 3:  # written before start times were recorded
                return cls(parts[0], int(parts[1]), "", parts[2])
        except ValueError:
            return None
        return None

    @classmethod
    def me(cls) -> Holder:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _process_start(pid) or "", uuid.uuid4().hex[:8])

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}:{self.token}"

    def is_gone(self) -> bool:
        """True only when this host can see the holder's process is gone (never for another host)."""
        if self.host != socket.gethostname():
            return False
        if self.pid == os.getpid():  # this very process, unless the pid was reused (a restarted container)
            mine = _process_start(self.pid)
            return bool(self.start and mine and mine != self.start)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # exists, owned by another user
        if _process_state(self.pid) == "Z":
            return True  # killed, not yet reaped
        start = _process_start(self.pid)
        return bool(self.start and start and start != self.start)  # the pid was reused


class TableLock:
    """`with TableLock(engine, catalog, "events.raw"):` — raises LockBusyError if someone else holds it.

    `acquire()` / `release()` for explicit use; while held, a heartbeat renews the lease.
    """

    def __init__(self, engine: Engine, catalog_name: str, table: str, *, ttl: float = DEFAULT_TTL_S, heartbeat: bool = True) -> None:
        self.engine = engine
        self.catalog_name = catalog_name
        self.table = table
        self.ttl = ttl
        self.owner = str(Holder.me())
        self.held = False
        self.lost = False  # the heartbeat found the lease taken by someone else
        self.took_over: str | None = None  # the dead holder this lock replaced, if any
        self._heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _key(self) -> Any:
        return (locks.c.catalog_name == self.catalog_name) & (locks.c.table_name == self.table)

    def _try_once(self) -> bool:
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(locks).values(
                        catalog_name=self.catalog_name, table_name=self.table, owner=self.owner, expires_at=now + self.ttl
                    )
                )
            return True
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            free = (locks.c.owner.is_(None)) | (locks.c.expires_at < now)
            res = conn.execute(update(locks).where(self._key() & free).values(owner=self.owner, expires_at=now + self.ttl))
            if res.rowcount == 1:
                return True
            row = conn.execute(select(locks.c.owner).where(self._key())).first()
        holder = Holder.parse(row.owner) if row is not None and row.owner else None
        if holder is None or not holder.is_gone():
            return False
        with self.engine.begin() as conn:  # only if the row still names that dead holder
            res = conn.execute(
                update(locks).where(self._key() & (locks.c.owner == str(holder))).values(owner=self.owner, expires_at=now + self.ttl)
            )
        if res.rowcount == 1:
            self.took_over = str(holder)
            log.warning("%s: took over the maintenance lock of %s, whose process is gone", self.table, holder)
            return True
        return False

    def acquire(self, wait: float = 0.0) -> bool:
        """Take the lock if free, expired, or held by a dead process on this host; else poll up to `wait` seconds.

        Returns False if another live holder still has it after `wait`.
        """
        ensure_schema(self.engine)
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            if self._try_once():
                self.held, self.lost = True, False
                self._start_heartbeat()
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, WAIT_POLL_S * random.uniform(0.5, 1.0)))

    def _renew(self) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(locks).where(self._key() & (locks.c.owner == self.owner)).values(expires_at=time.time() + self.ttl)
            )
        return res.rowcount == 1

    def _start_heartbeat(self) -> None:
        if not self._heartbeat:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"icebergdo-lease-{self.table}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        interval = max(0.05, self.ttl / 3)
        while not self._stop.wait(interval):
            try:
                if not self._renew():
                    self.lost = True
                    log.error("%s: maintenance lease lost (taken by another maintainer)", self.table)
                    return
            except SQLAlchemyError as e:  # the catalog is briefly unreachable: try again next beat
                log.warning("%s: could not renew the maintenance lease: %s", self.table, type(e).__name__)

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None

    def refresh(self) -> None:
        """Extend the lease now; raises LockBusyError if it was lost (expired and taken by someone else)."""
        if self.lost or not self._renew():
            self.held = False
            self._stop_heartbeat()
            raise LockBusyError(f"{self.table}: maintenance lock lost (expired and taken by another maintainer)")

    def release(self, summary: dict[str, Any] | None = None) -> None:
        """Free the lock; with `summary`, also record this run as the table's last maintenance."""
        self._stop_heartbeat()
        if not self.held:
            return
        values: dict[str, Any] = {"owner": None, "expires_at": None}
        if summary is not None:
            values["last_run_at"] = time.time()
            values["last_summary"] = json.dumps(summary, default=str)
        with self.engine.begin() as conn:
            conn.execute(update(locks).where(self._key() & (locks.c.owner == self.owner)).values(**values))
        self.held = False

    def __enter__(self) -> Self:
        if not self.acquire():
            holder = current_holder(self.engine, self.catalog_name, self.table)
            raise LockBusyError(f"{self.table}: another maintainer holds the lock ({holder or 'unknown'})")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def current_holder(engine: Engine, catalog_name: str, table: str) -> str | None:
    ensure_schema(engine)
    with engine.connect() as conn:
        row = conn.execute(
            select(locks.c.owner, locks.c.expires_at).where((locks.c.catalog_name == catalog_name) & (locks.c.table_name == table))
        ).first()
    if row is None or row.owner is None or (row.expires_at or 0) < time.time():
        return None
    return str(row.owner)


def last_run(engine: Engine, catalog_name: str, table: str) -> tuple[float | None, dict[str, Any] | None]:
    """(when, summary) of the table's last recorded maintenance run."""
    ensure_schema(engine)
    with engine.connect() as conn:
        row = conn.execute(
            select(locks.c.last_run_at, locks.c.last_summary).where(
                (locks.c.catalog_name == catalog_name) & (locks.c.table_name == table)
            )
        ).first()
    if row is None or row.last_run_at is None:
        return None, None
    return float(row.last_run_at), json.loads(row.last_summary) if row.last_summary else None


class Lease(Protocol):
    """What maintenance needs of a per-table lease (both implementations have it)."""

    table: str
    owner: str
    held: bool

    def acquire(self) -> bool: ...
    def refresh(self) -> None: ...
    def release(self, summary: dict[str, Any] | None = None) -> None: ...


def acquire(lease: Lease, wait: float = 0.0) -> bool:
    """Take `lease`, polling for up to `wait` seconds while another live maintainer holds it."""
    if isinstance(lease, TableLock):
        return lease.acquire(wait=wait)
    deadline = time.monotonic() + max(0.0, wait)
    while not lease.acquire():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, WAIT_POLL_S * random.uniform(0.5, 1.0)))
    return True


def holder_of(lh: Tables, table: str) -> str | None:
    """Who holds the table's maintenance lease now (None: nobody, or it expired)."""
    engine = getattr(lh.catalog, "engine", None)
    if engine is not None:
        return current_holder(engine, lh.config.catalog_name, table)
    return leases.current_holder(lh, table)


def table_lock(lh: Tables, table: str, *, ttl: float = DEFAULT_TTL_S) -> Lease:
    """The maintenance lease of `table`: a database row on a SQL catalog, else one kept through Iceberg commits."""
    engine = getattr(lh.catalog, "engine", None)
    if engine is not None:
        return TableLock(engine, lh.config.catalog_name, table, ttl=ttl)
    return leases.RefLease(lh, table, ttl=ttl)


def last_run_of(lh: Tables, table: str) -> tuple[float | None, dict[str, Any] | None]:
    """(when, summary) of the table's last recorded maintenance run, wherever this catalog keeps it."""
    engine = getattr(lh.catalog, "engine", None)
    if engine is not None:
        return last_run(engine, lh.config.catalog_name, table)
    return leases.last_run(lh, table)
