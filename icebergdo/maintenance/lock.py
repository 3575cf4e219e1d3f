"""One maintainer per table, across processes and hosts: a lease with an expiry.

The lease carries an expiry, so a maintainer that died frees its table after `ttl` seconds; a live
one extends it with `refresh()`. The same record remembers the last maintenance run for `health`.
Two implementations of one contract (`Lease`), chosen by `table_lock` from the catalog:

- SQL catalog: `TableLock`, a row in the catalog's own database (`icebergdo_locks`);
- any other (a REST catalog: R2 Data Catalog, Polaris, ours): `icebergdo.iceberg.leases.RefLease`,
  a compare-and-swap through the Iceberg commit protocol alone (tags on a system table).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
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
from sqlalchemy.exc import IntegrityError

from icebergdo.errors import LockBusyError
from icebergdo.iceberg import leases

if TYPE_CHECKING:
    from icebergdo.tables import Tables

LOCK_TABLE = "icebergdo_locks"
DEFAULT_TTL_S = 600.0

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


class TableLock:
    """`with TableLock(engine, catalog, "events.raw"):` — raises LockBusyError if someone else holds it."""

    def __init__(self, engine: Engine, catalog_name: str, table: str, *, ttl: float = DEFAULT_TTL_S) -> None:
        self.engine = engine
        self.catalog_name = catalog_name
        self.table = table
        self.ttl = ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.held = False

    def _key(self) -> Any:
        return (locks.c.catalog_name == self.catalog_name) & (locks.c.table_name == self.table)

    def acquire(self) -> bool:
        """Take the lock if free or expired; False if another live holder has it."""
        ensure_schema(self.engine)
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(locks).values(
                        catalog_name=self.catalog_name, table_name=self.table, owner=self.owner, expires_at=now + self.ttl
                    )
                )
            self.held = True
            return True
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            free = (locks.c.owner.is_(None)) | (locks.c.expires_at < now)
            res = conn.execute(update(locks).where(self._key() & free).values(owner=self.owner, expires_at=now + self.ttl))
            self.held = res.rowcount == 1
        return self.held

    def refresh(self) -> None:
        """Extend the lease; raises if it was lost (expired and taken by someone else)."""
        with self.engine.begin() as conn:
            res = conn.execute(
                update(locks).where(self._key() & (locks.c.owner == self.owner)).values(expires_at=time.time() + self.ttl)
            )
        if res.rowcount != 1:
            self.held = False
            raise LockBusyError(f"{self.table}: maintenance lock lost (expired and taken by another maintainer)")

    def release(self, summary: dict[str, Any] | None = None) -> None:
        """Free the lock; with `summary`, also record this run as the table's last maintenance."""
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
