"""CDC events in the event stream → their collections: a post-commit step of `events.raw`.

An event with `type` `cdc.insert|update|delete` (or `collection.*`) and both `namespace` and
`collection` set becomes one change of that collection. The facade registers `CdcRouter` as a
post-commit hook of `Tables.append`, so `append_events` and the buffered writer route the same way.

The events are committed before they are routed, and `events.raw` stays the source of truth, so
routing never makes that commit look failed (a caller who retried would commit it twice):

- an event that can never be applied (no key, wrong type, reserved namespace) is skipped with a
  logged warning naming it;
- a collection whose apply fails (storage, catalog, too many concurrent folds) is recorded on
  `events.raw` as the table property `icebergdo.cdc.unrouted.<snapshot id>` = the collections, and
  `route_pending` (run after the next successful routing, and by `icebergdo cdc repair`) applies
  that snapshot's events to them later. One property per snapshot: concurrent writers never
  overwrite each other's records. Routing is at least once; the fold is idempotent, so an event
  routed twice leaves the state as once (its change-log row appears twice).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from icebergdo import layout
from icebergdo.cdc.changes import (
    parse_changes,
)
from icebergdo.cdc.collection import Collection
from icebergdo.errors import (
    BadInputError,
    IcebergdoError,
)
from icebergdo.tables import AppendResult, Tables

log = logging.getLogger(__name__)

CDC_EVENT_TYPES = {f"{p}.{op}": op for p in ("cdc", "collection") for op in ("insert", "update", "delete")}
UNROUTED_PREFIX = "icebergdo.cdc.unrouted."
RECORD_ATTEMPTS = 5


class CdcRouter:
    """The post-commit hook on `events.raw`: route the batch's CDC events, record what failed."""

    __name__ = "cdc-routing"

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    def __call__(self, table: Table, batch: pa.Table, result: AppendResult) -> None:
        if result.table != layout.EVENTS_TABLE:
            return
        failed = route_events(self.tables, batch)
        if failed:
            record_unrouted(table, result.snapshot_id, failed)
        elif unrouted(table):
            route_pending(self.tables)


# -- from the event stream --------------------------------------------------------------------------
def route_events(tables: Tables, batch: pa.Table) -> dict[str, str]:
    """Apply the CDC events of a committed `events.raw` batch to their collections.

    An event with `type` `cdc.insert|update|delete` (or `collection.*`) and both `namespace`
    and `collection` set becomes one change: its `payload` (JSON) is the row, or
    `{"row": {...}, "key": ..., "seq": n}`; its `ts` is the change time and its `id` the change
    id. The events are already stored, and `events.raw` stays the source of truth, so an event
    that cannot be applied (no key, wrong type, reserved namespace) is skipped with a logged
    warning naming it instead of failing the ingest; everything else is applied, one `apply`
    per collection. Returns the collections whose apply failed otherwise, with the reason.
    """
    failed: dict[str, str] = {}
    if batch.num_rows == 0 or not {"type", "namespace", "collection"} <= set(batch.column_names):
        return failed
    mask = pc.and_(
        pc.is_in(batch.column("type"), value_set=pa.array(list(CDC_EVENT_TYPES), pa.string())),
        pc.and_(pc.is_valid(batch.column("namespace")), pc.is_valid(batch.column("collection"))),
    )
    if not pc.any(mask).as_py():
        return failed
    cols = [c for c in ("id", "ts", "type", "namespace", "collection", "payload") if c in batch.column_names]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in batch.filter(mask).select(cols).to_pylist():
        groups.setdefault((row["namespace"], row["collection"]), []).append(row)
    for (ns, name), rows in groups.items():
        try:
            coll = Collection.open(tables, ns, name)
        except IcebergdoError as e:
            log.warning("CDC: %d event(s) for %s.%s skipped: %s", len(rows), ns, name, e)
            continue
        changes: list[dict[str, Any]] = []
        labels: list[str] = []
        ids: list[str] = []
        for row in rows:
            label = f"event {row.get('id') or '?'} ({ns}.{name})"
            try:
                change = _event_change(row, label)
                parse_changes([change], coll.key, labels=[label])
            except BadInputError as e:
                log.warning("CDC: skipped %s", e)
                continue
            changes.append(change)
            labels.append(label)
            ids.append(row.get("id") or "")
        if not changes:
            continue
        try:
            coll.apply(changes, labels=labels, _ids=ids if all(ids) else None)
        except BadInputError as e:
            log.warning("CDC: %d event(s) for %s.%s skipped: %s", len(changes), ns, name, e)
        except Exception as e:  # noqa: BLE001 - recorded for route_pending; the events are safe in events.raw
            log.error("CDC: %d event(s) for %s.%s not applied yet (recorded for `icebergdo cdc repair`): %s",
                      len(changes), ns, name, e)
            failed[f"{ns}.{name}"] = f"{type(e).__name__}: {e}"
    return failed


def unrouted(table: Table) -> dict[int, list[str]]:
    """Snapshots of `events.raw` whose CDC events some collections still lack: {snapshot id: collections}."""
    out = {}
    for key, value in table.properties.items():
        if key.startswith(UNROUTED_PREFIX):
            try:
                out[int(key[len(UNROUTED_PREFIX):])] = [c for c in json.loads(value) if isinstance(c, str)]
            except ValueError:
                log.warning("ignoring malformed table property %s", key)
    return out


def _update_properties(table: Table, *, set_: dict[str, str] | None = None, remove: list[str] | None = None) -> None:
    for attempt in range(RECORD_ATTEMPTS):
        try:
            with table.transaction() as tx:
                if set_:
                    tx.set_properties(set_)
                if remove:
                    tx.remove_properties(*remove)
            return
        except CommitFailedException:
            if attempt == RECORD_ATTEMPTS - 1:
                raise
            table.refresh()


def record_unrouted(table: Table, snapshot_id: int | None, failed: dict[str, str]) -> None:
    """Remember that `failed` collections still lack the CDC events of snapshot `snapshot_id`."""
    if snapshot_id is None:
        return
    collections = sorted(set(failed) | set(unrouted(table).get(snapshot_id, [])))
    _update_properties(table, set_={f"{UNROUTED_PREFIX}{snapshot_id}": json.dumps(collections)})


def route_pending(tables: Tables) -> int:
    """Apply the CDC events recorded as not yet routed; returns how many snapshots were completed."""
    table = tables.find_table(layout.EVENTS_TABLE)
    if table is None:
        return 0
    done = 0
    for snapshot_id, collections in sorted(unrouted(table).items()):
        key = f"{UNROUTED_PREFIX}{snapshot_id}"
        snap = table.snapshot_by_id(snapshot_id)
        if snap is None:
            log.error("CDC: snapshot %s of %s expired before its events reached %s; apply them from events.raw by hand",
                      snapshot_id, layout.EVENTS_TABLE, ", ".join(collections))
            _update_properties(table, remove=[key])
            continue
        rows = table.incremental_append_scan(
            from_snapshot_id_exclusive=snap.parent_snapshot_id, to_snapshot_id_inclusive=snapshot_id
        ).to_arrow()
        keys = pc.binary_join_element_wise(rows.column("namespace"), rows.column("collection"), ".")
        mine = rows.filter(pc.fill_null(pc.is_in(keys, value_set=pa.array(collections, pa.string())), False))
        failed = route_events(tables, mine)
        if failed:
            _update_properties(table, set_={key: json.dumps(sorted(failed))})
            continue
        _update_properties(table, remove=[key])
        log.info("CDC: routed the pending events of snapshot %s to %s", snapshot_id, ", ".join(collections))
        done += 1
    return done


def _event_change(row: Mapping[str, Any], label: str) -> dict[str, Any]:
    try:
        payload = json.loads(row["payload"]) if row.get("payload") else None
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise BadInputError(f"{label}: payload must be a JSON object carrying the key and the row")
    change: dict[str, Any] = {"op": CDC_EVENT_TYPES[row["type"]], "ts": row["ts"]}
    if isinstance(payload.get("row"), dict):
        change.update({k: v for k, v in payload.items() if k in ("row", "key", "seq")})
    else:
        change["row"] = payload
    return change
