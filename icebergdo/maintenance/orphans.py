"""Orphan-file removal: files under a table's own prefixes that no metadata references.

Leftovers of failed commits (data files written, commit lost) are found by listing the table's
data, metadata and manifest prefixes and subtracting everything the metadata reaches: all
snapshots, all manifest entries of any status, statistics files, and the same for every metadata
version still in the metadata log (a reader or a retrying writer may be working from one).

The invariant: a file that any committed metadata version references, or that an in-flight
commit is about to reference, is never deleted. Committed references are re-read *after* the
listing, and again right before deleting, so a commit that lands while the job runs protects its
files. In-flight commits are protected by the age window (`orphan_age`, default 3 days): a file
younger than it is never touched. Below a floor of one hour that protection is too thin to rely
on, so a shorter window is refused unless asked for explicitly (`unsafe_orphan_age`), and then
the final re-read and the deletes happen while no icebergdo append has data files in flight and
none can commit: every append holds the table's uploads lock (shared) from its first data file
to its commit, and the commit lock while it commits; orphan removal takes both exclusively. The
age window is all that protects files of commits that do not take those locks — CDC state folds,
Spark, other engines: do not go below the floor while they write.

Safety of the prefixes: each must look like this table's (under the warehouse, not the warehouse
or the catalog root; metadata under the table's location); files under any *other* table's prefix
are excluded even when nested inside ours, and `version-hint.text` is never deleted.
"""

from __future__ import annotations

import contextlib
import posixpath
import time
from collections.abc import Callable

from pyiceberg.table import Table

from icebergdo import commit
from icebergdo.errors import BadInputError, UnsafeOperationError, UnsafePrefixError
from icebergdo.iceberg.catalog import VERSION_HINT
from icebergdo.maintenance.common import (
    ORPHAN_AGE_DEFAULT_S,
    ORPHAN_AGE_FLOOR_S,
    StepReport,
    TablePrefixes,
    table_name,
    table_prefixes,
)
from icebergdo.maintenance.reachable import referenced_by_history
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


def check_age(name: str, older_than_s: float, unsafe: bool) -> None:
    """Refuse a window below the floor (1 h) unless `unsafe`; a negative window is a mistake."""
    if older_than_s < 0:
        raise BadInputError(f"{name}: the orphan age must not be negative (got {older_than_s:g}s)")
    if older_than_s < ORPHAN_AGE_FLOOR_S and not unsafe:
        raise UnsafeOperationError(
            f"{name}: an orphan age of {older_than_s:g}s is below the {ORPHAN_AGE_FLOOR_S / 3600:g}h floor: files of commits "
            "still in flight could be deleted; pass --unsafe-orphan-age (MaintenanceOptions(unsafe_orphan_age=True)) "
            "if every writer of this table is an icebergdo append"
        )


def remove_orphans(
    table: Table,
    *,
    store: Store,
    warehouse: str,
    other_prefixes: list[str],
    older_than_s: float = ORPHAN_AGE_DEFAULT_S,
    unsafe_age: bool = False,
    dry_run: bool = False,
    now: float | None = None,
    progress: Callable[[str], None] = lambda _m: None,
    lock_timeout_s: float = commit.LOCK_TIMEOUT_S,
) -> StepReport:
    """Delete unreferenced files older than `older_than_s` under the table's prefixes.

    `other_prefixes` are every other table's prefixes in the catalog (see `all_prefixes`). `now`
    (epoch seconds) stands for the clock at the start of the listing.
    """
    started = time.monotonic()
    name = table_name(table)
    prefixes = table_prefixes(table)
    check_prefixes(name, prefixes, table.metadata.location, warehouse)
    check_age(name, older_than_s, unsafe_age)
    below_floor = older_than_s < ORPHAN_AGE_FLOOR_S
    report = StepReport(name, "orphans", dry_run)
    listed_at = now if now is not None else time.time()
    # List first, then read the metadata: a file committed in between is then referenced.
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
    refs = referenced_by_history(table.metadata, table.io, table.metadata_location)
    referenced = refs.all()
    unreferenced = [info for path, info in listed.items() if path not in referenced and posixpath.basename(path) != VERSION_HINT]
    orphans = [i for i in unreferenced if i.mtime < listed_at - older_than_s]
    report.details["listed"] = len(listed)
    report.details["unreferenced"] = len(unreferenced)
    report.details["unreferenced_bytes"] = sum(i.size for i in unreferenced)
    report.details["too_recent"] = len(unreferenced) - len(orphans)
    if orphans and not dry_run:
        # Below the floor no icebergdo append may have data files in flight, nor commit, between the last
        # look and the deletes: wait for a moment without uploads, then hold the commit lock too.
        uploads = commit.exclusive_uploads_lock(table.catalog, name, lock_timeout_s) if below_floor else contextlib.nullcontext(True)
        commits = commit.exclusive_commit_lock(table.catalog, name, lock_timeout_s) if below_floor else contextlib.nullcontext(True)
        with uploads as quiet, commits as locked:
            held = quiet and locked
            if not held:
                report.notes.append(f"nothing deleted: appends kept the table busy for {lock_timeout_s:g}s")
                orphans = []
            else:
                table = table.refresh()
                referenced = referenced_by_history(table.metadata, table.io, table.metadata_location, seen=refs).all()
                late = [i for i in orphans if i.path in referenced]
                orphans = [i for i in orphans if i.path not in referenced]
                report.details["referenced_meanwhile"] = len(late)
                if orphans:
                    progress(f"{name}: deleting {len(orphans)} orphan file(s)")
                    store.delete(sorted(i.path for i in orphans))
    report.files_in = len(orphans)
    report.bytes_in = sum(i.size for i in orphans)
    report.details["paths"] = sorted(i.path for i in orphans)[:20]
    report.seconds = time.monotonic() - started
    return report


def all_prefixes(tables: dict[str, Table]) -> dict[str, list[str]]:
    """Each table's prefixes, by table name (to pass the others' to `remove_orphans`)."""
    return {n: table_prefixes(t).all() for n, t in tables.items()}
