"""Conditional table-property updates: change properties only if the ones we looked at are unchanged.

Table properties are applied on top of the newest metadata when a commit lands, so a plain
`set_properties` or `remove_properties` computed from a stale read can undo another process's
write (lost update). Here the commit carries a requirement, checked by the catalog against the
metadata it applies the commit to, that every property we based the decision on still has the
value we read; otherwise it fails with CommitFailedException and the caller reads again.

Used to add missing table defaults without ever overriding a value a user set meanwhile, and to
prune ledger entries without ever removing one a live writer just advanced. A REST catalog only
knows the spec's requirements: there the commit requires that no snapshot was committed since the
read (every ledger update comes with one; a user's property change meanwhile is not detected).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from pydantic import Field
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import AssertRefSnapshotId, ValidatableTableRequirement

from icebergdo.iceberg.catalog import accepts_own_requirements

ATTEMPTS = 5


class PropertiesUnchanged(ValidatableTableRequirement):
    """Every key in `expected` still has that value (None: still absent)."""

    type: Literal["icebergdo-properties-unchanged"] = Field(default="icebergdo-properties-unchanged")
    expected: dict[str, str | None]

    def validate(self, base_metadata: TableMetadata | None) -> None:  # type: ignore[override]  # pydantic's deprecated classmethod
        if base_metadata is None:
            raise CommitFailedException("table no longer exists")
        changed = [k for k, v in self.expected.items() if base_metadata.properties.get(k) != v]
        if changed:
            raise CommitFailedException(f"properties changed concurrently: {', '.join(sorted(changed))}")


def update_if_unchanged(
    table: Table,
    plan: Callable[[Mapping[str, str]], tuple[dict[str, str], list[str], dict[str, str | None]]],
    *,
    attempts: int = ATTEMPTS,
) -> tuple[Table, bool]:
    """Apply `plan(properties) -> (set, remove, expected)` conditionally, re-planning after a conflict.

    Returns (the table as now loaded, whether a commit was made). An empty plan commits nothing.
    """
    for attempt in range(attempts):
        to_set, to_remove, expected = plan(table.metadata.properties)
        if not to_set and not to_remove:
            return table, False
        tx = Transaction(table, autocommit=False)
        if accepts_own_requirements(table.catalog):
            tx._stage((), (PropertiesUnchanged(expected=expected),))  # type: ignore[arg-type]  # a requirement of our own
        else:  # a REST server knows only the spec's requirements: "no commit since we read" is the closest
            snap = table.metadata.current_snapshot_id
            tx._stage((), (AssertRefSnapshotId(snapshot_id=snap, ref="main"),))  # type: ignore[call-arg]  # pydantic alias
        if to_set:
            tx.set_properties(to_set)
        if to_remove:
            tx.remove_properties(*to_remove)
        try:
            return tx.commit_transaction(), True
        except CommitFailedException:
            if attempt == attempts - 1:
                raise
            table = table.refresh()
    raise AssertionError("unreachable")


def set_missing(table: Table, defaults: Mapping[str, str]) -> tuple[Table, list[str]]:
    """Add every property of `defaults` the table lacks; never touch one that is set. Returns the keys added."""
    added: list[str] = []

    def plan(props: Mapping[str, str]) -> tuple[dict[str, str], list[str], dict[str, str | None]]:
        missing = {k: v for k, v in defaults.items() if k not in props}
        added[:] = sorted(missing)
        return missing, [], dict.fromkeys(missing)

    table, _ = update_if_unchanged(table, plan)
    return table, added


def remove_if_unchanged(table: Table, choose: Callable[[Mapping[str, str]], list[str]]) -> tuple[Table, list[str]]:
    """Remove the keys `choose(properties)` picks, each only if it still has the value it was chosen by."""
    removed: list[str] = []

    def plan(props: Mapping[str, str]) -> tuple[dict[str, str], list[str], dict[str, str | None]]:
        keys = [k for k in choose(props) if k in props]
        removed[:] = keys
        return {}, keys, {k: props[k] for k in keys}

    table, _ = update_if_unchanged(table, plan)
    return table, removed
