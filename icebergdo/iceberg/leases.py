"""Leases and small records kept through the Iceberg commit protocol alone (for REST catalogs).

On a SQL catalog, maintenance takes its per-table lease in a row of the catalog database. A REST
catalog (R2 Data Catalog, Polaris, ours) offers no database: only tables, and commits guarded by
requirements. This module builds a compare-and-swap register out of exactly that.

The register lives in one system table, `icebergdo_system.leases` (one row, one snapshot, hidden
from `Tables.tables()`):

- The lease on table T is a tag `lease.<T>.<generation>` on that table, plus the table property
  `icebergdo.lease.<T>` = {owner, expires_at, generation}. Taking the lease moves the tag from
  generation g to g+1 in one commit whose requirements say "tag g is there (or none ever was) and
  tag g+1 is not": of two maintainers racing for the same generation exactly one commit passes,
  the other gets CommitFailedException (HTTP 409) and sees the new holder. Property updates alone
  could not do this: the protocol has no requirement on properties, so two writers would both win.
- Extending (`refresh`) and releasing require the holder's own tag: a lease that expired and was
  taken over has lost its tag, so the old holder finds out instead of writing over the new one.
- The last maintenance run of T is the property `icebergdo.last-run.<T>` = {at, summary}, written
  with the release.

Unrelated commits to the register (two tables' leases at once) can still fail the catalog's own
compare-and-swap on the metadata file; every operation then re-reads and re-decides, a few times.
The tags point at the register's one snapshot, so they pin nothing of the data tables.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import uuid
from typing import Any, Self

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType
from pyiceberg.table.update import (
    AssertRefSnapshotId,
    AssertTableUUID,
    RemoveSnapshotRefUpdate,
    SetPropertiesUpdate,
    SetSnapshotRefUpdate,
    TableRequirement,
    TableUpdate,
)

from icebergdo import layout
from icebergdo.errors import LockBusyError, StorageError

log = logging.getLogger(__name__)

REGISTER_TABLE = f"{layout.SYSTEM_NAMESPACE}.leases"
LEASE_PROPERTY = "icebergdo.lease."
LAST_RUN_PROPERTY = "icebergdo.last-run."
TAG_PREFIX = "lease."
ATTEMPTS = 8
_SCHEMA = pa.schema([pa.field("purpose", pa.string())])


def _tag(table: str, generation: int) -> str:
    return f"{TAG_PREFIX}{table}.{generation}"


def _generation(register: Table, table: str) -> int:
    """The lease's current generation: the highest `lease.<table>.<g>` tag (0: never taken)."""
    prefix = f"{TAG_PREFIX}{table}."
    gens = [int(name[len(prefix):]) for name in register.metadata.refs if name.startswith(prefix) and name[len(prefix):].isdigit()]
    return max(gens, default=0)


def _state(register: Table, table: str) -> dict[str, Any]:
    try:
        value = json.loads(register.metadata.properties.get(LEASE_PROPERTY + table, "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class RefLease:
    """`with RefLease(tables, "events.raw"):` — the same contract as the SQL `TableLock`, on any Iceberg catalog."""

    def __init__(self, tables: Any, table: str, *, ttl: float = 600.0) -> None:
        self.tables = tables
        self.table = table
        self.ttl = ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.generation = 0
        self.held = False

    # -- the register ------------------------------------------------------------------------
    def _register(self) -> Table:
        return register_table(self.tables)

    def _commit(self, register: Table, requirements: list[TableRequirement], updates: list[TableUpdate]) -> None:
        register.catalog.commit_table(register, (AssertTableUUID(uuid=register.metadata.table_uuid), *requirements), tuple(updates))

    def _retry(self, attempt: int) -> None:
        time.sleep(random.uniform(0, 0.05 * 2**attempt))

    # -- the lease ---------------------------------------------------------------------------
    def acquire(self) -> bool:
        """Take the lease if free or expired; False if another live holder has it."""
        for attempt in range(ATTEMPTS):
            register = self._register()
            gen = _generation(register, self.table)
            state = _state(register, self.table)
            if state.get("owner") and state.get("generation") == gen and float(state.get("expires_at", 0)) > time.time():
                return False
            snapshot_id = register.metadata.current_snapshot_id
            assert snapshot_id is not None  # the register is created with one row
            requirements: list[TableRequirement] = [AssertRefSnapshotId.model_validate({"ref": _tag(self.table, gen + 1), "snapshot-id": None})]
            updates: list[TableUpdate] = []
            if gen:
                current = register.metadata.refs[_tag(self.table, gen)].snapshot_id
                requirements.append(AssertRefSnapshotId.model_validate({"ref": _tag(self.table, gen), "snapshot-id": current}))
                updates.append(RemoveSnapshotRefUpdate.model_validate({"ref-name": _tag(self.table, gen)}))
            updates += [
                SetSnapshotRefUpdate.model_validate({"ref-name": _tag(self.table, gen + 1), "type": SnapshotRefType.TAG, "snapshot-id": snapshot_id}),
                SetPropertiesUpdate(updates={LEASE_PROPERTY + self.table: self._state(gen + 1)}),
            ]
            try:
                self._commit(register, requirements, updates)
            except CommitFailedException:
                self._retry(attempt)  # a rival took it, or an unrelated commit moved the register: look again
                continue
            self.generation, self.held = gen + 1, True
            return True
        return False

    def _state(self, generation: int, *, owner: str | None = "self", expires_at: float | None = None) -> str:
        return json.dumps({
            "owner": self.owner if owner == "self" else owner,
            "expires_at": expires_at if expires_at is not None else time.time() + self.ttl,
            "generation": generation,
        })

    def _update_own(self, properties: dict[str, str]) -> bool:
        """Set properties while our tag still stands; False when the lease was lost."""
        for attempt in range(ATTEMPTS):
            register = self._register()
            ref = register.metadata.refs.get(_tag(self.table, self.generation))
            if ref is None or _generation(register, self.table) != self.generation:
                return False
            try:
                self._commit(
                    register,
                    [AssertRefSnapshotId.model_validate({"ref": _tag(self.table, self.generation), "snapshot-id": ref.snapshot_id})],
                    [SetPropertiesUpdate(updates=properties)],
                )
                return True
            except CommitFailedException:
                self._retry(attempt)
        raise StorageError(f"{self.table}: the lease register kept changing under {ATTEMPTS} attempts")

    def refresh(self) -> None:
        """Extend the lease; raises LockBusyError if it was lost (expired and taken by someone else)."""
        if not self._update_own({LEASE_PROPERTY + self.table: self._state(self.generation)}):
            self.held = False
            raise LockBusyError(f"{self.table}: maintenance lease lost (expired and taken by another maintainer)")

    def release(self, summary: dict[str, Any] | None = None) -> None:
        """Free the lease; with `summary`, also record this run as the table's last maintenance."""
        if not self.held:
            return
        props = {LEASE_PROPERTY + self.table: self._state(self.generation, owner=None, expires_at=0.0)}
        if summary is not None:
            props[LAST_RUN_PROPERTY + self.table] = json.dumps({"at": time.time(), "summary": summary}, default=str)
        try:
            self._update_own(props)
        finally:
            self.held = False

    def __enter__(self) -> Self:
        if not self.acquire():
            raise LockBusyError(f"{self.table}: another maintainer holds the lease ({current_holder(self.tables, self.table) or 'unknown'})")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def register_table(tables: Any) -> Table:
    """`icebergdo_system.leases`, created (with the one row that gives it a snapshot) on first use."""
    found = tables.find_table(REGISTER_TABLE)
    if found is not None and found.metadata.current_snapshot_id is not None:
        return found
    if found is None:
        found = tables.create_table(REGISTER_TABLE, _SCHEMA, data_path=f"{layout.SYSTEM_NAMESPACE}/leases")
    if found.metadata.current_snapshot_id is None:
        try:
            found.append(pa.table({"purpose": ["icebergdo maintenance leases: see table properties and tags"]}, schema=_SCHEMA))
        except CommitFailedException:
            found = tables.find_table(REGISTER_TABLE)  # another process gave it its row first
    return found


def current_holder(tables: Any, table: str) -> str | None:
    register = register_table(tables)
    state = _state(register, table)
    if not state.get("owner") or state.get("generation") != _generation(register, table) or float(state.get("expires_at", 0)) < time.time():
        return None
    return str(state["owner"])


def last_run(tables: Any, table: str) -> tuple[float | None, dict[str, Any] | None]:
    """(when, summary) of the table's last recorded maintenance run."""
    found = tables.find_table(REGISTER_TABLE)
    if found is None:
        return None, None
    try:
        value = json.loads(found.metadata.properties.get(LAST_RUN_PROPERTY + table, "null"))
    except ValueError:
        return None, None
    if not isinstance(value, dict):
        return None, None
    return float(value["at"]), value.get("summary")
