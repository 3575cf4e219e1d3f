"""Orphan-file removal: files under a table's own prefixes that no metadata references.

Leftovers of failed commits (data files written, commit lost) are found by listing the table's
data, metadata and manifest prefixes and subtracting everything the current metadata reaches
(all snapshots, all manifest entries, the metadata log, statistics files). Only files older than
a safety window (default 3 days) go, so an in-flight writer's files are never touched.

Safety: each prefix must look like this table's (under the warehouse, not the warehouse or the
catalog root; metadata under the table's location); files under any *other* table's prefix are
excluded even when nested inside ours, and `version-hint.text` is never deleted.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable

from pyiceberg.table import Table

from icebergdo.errors import UnsafePrefixError
from icebergdo.iceberg.catalog import VERSION_HINT
from icebergdo.maintenance.common import (
    ORPHAN_AGE_DEFAULT_S,
    StepReport,
    TablePrefixes,
    table_name,
    table_prefixes,
)
from icebergdo.maintenance.reachable import reachable
from icebergdo.store import FileInfo, Store, is_under, normalise


def check_prefixes(name: str, prefixes: TablePrefixes, location: str, warehouse: str) -> None:
    """Refuse prefixes that could cover other tables' files."""
    wh = normalise(warehouse)
    loc = normalise(location)
    for label, prefix in (("data", prefixes.data), ("metadata", prefixes.metadata), ("manifests", prefixes.manifests)):
        p = normalise(prefix)
        if not is_under(p, wh) or p == wh:
            raise UnsafePrefixError(f"{name}: {label} prefix {p} is not inside the warehouse {wh}; refusing to list it")
        if is_under(f"{wh}/catalog", p):
            raise UnsafePrefixError(f"{name}: {label} prefix {p} covers the catalog folder; refusing to list it")
        if label != "data" and not is_under(p, loc):
            raise UnsafePrefixError(f"{name}: {label} prefix {p} is outside the table location {loc}; refusing to list it")


def foreign_prefixes(own: str, others: list[str]) -> list[str]:
    """Other tables' prefixes that lie inside (or equal) one of ours: their files are not ours to judge."""
    return [o for o in others if is_under(o, own)]


def remove_orphans(
    table: Table,
    *,
    store: Store,
    warehouse: str,
    other_prefixes: list[str],
    older_than_s: float = ORPHAN_AGE_DEFAULT_S,
    dry_run: bool = False,
    now: float | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> StepReport:
    """Delete unreferenced files older than `older_than_s` under the table's prefixes.

    `other_prefixes` are every other table's prefixes in the catalog (see `all_prefixes`).
    """
    started = time.monotonic()
    name = table_name(table)
    prefixes = table_prefixes(table)
    check_prefixes(name, prefixes, table.metadata.location, warehouse)
    report = StepReport(name, "orphans", dry_run)
    now = now if now is not None else time.time()
    # List first, then read the metadata: a file committed between the two is then referenced.
    listed: dict[str, FileInfo] = {}
    for prefix in prefixes.all():
        excluded = foreign_prefixes(prefix, other_prefixes)
        if any(normalise(e) == normalise(prefix) for e in excluded):
            raise UnsafePrefixError(f"{name}: prefix {prefix} is also another table's prefix; refusing to list it")
        for info in store.list(prefix):
            if any(is_under(info.path, e) for e in excluded):
                continue
            listed[info.path] = info
    table = table.refresh()
    refs = reachable(table.metadata, table.io, metadata_location=table.metadata_location).all()
    unreferenced = [
        info for path, info in listed.items() if path not in refs and posixpath.basename(path) != VERSION_HINT
    ]
    orphans = [i for i in unreferenced if i.mtime < now - older_than_s]
    report.details["listed"] = len(listed)
    report.details["unreferenced"] = len(unreferenced)
    report.details["unreferenced_bytes"] = sum(i.size for i in unreferenced)
    report.details["too_recent"] = len(unreferenced) - len(orphans)
    report.files_in = len(orphans)
    report.bytes_in = sum(i.size for i in orphans)
    report.details["paths"] = sorted(i.path for i in orphans)[:20]
    if orphans and not dry_run:
        progress(f"{name}: deleting {len(orphans)} orphan file(s)")
        store.delete(sorted(i.path for i in orphans))
    report.seconds = time.monotonic() - started
    return report


def all_prefixes(tables: dict[str, Table]) -> dict[str, list[str]]:
    """Each table's prefixes, by table name (to pass the others' to `remove_orphans`)."""
    return {n: table_prefixes(t).all() for n, t in tables.items()}
