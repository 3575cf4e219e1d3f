"""Snapshot expiry that frees storage (Iceberg's `expire_snapshots` semantics).

1. Pick snapshots older than `older_than` (default `history.expire.max-snapshot-age-ms`, 5 days),
   always keeping the newest `retain_last` (default `history.expire.min-snapshots-to-keep`, 1) of
   the main branch's history and every branch/tag head; commit their removal (pyiceberg).
2. Delete what only the removed snapshots referenced: data and delete files, manifests, manifest
   lists — the difference between what the table referenced before and after the commit.
3. Delete metadata JSON files that have left the metadata log (older than its oldest entry);
   `metadata/version-hint.text` and the current file are never touched.
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.io import FileIO
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType
from pyiceberg.table.snapshots import Snapshot

from icebergdo.iceberg.catalog import VERSION_HINT
from icebergdo.maintenance.common import (
    MAX_SNAPSHOT_AGE_DEFAULT_MS,
    MAX_SNAPSHOT_AGE_PROPERTY,
    MIN_SNAPSHOTS_DEFAULT,
    MIN_SNAPSHOTS_PROPERTY,
    StepReport,
    table_name,
    table_prefixes,
)
from icebergdo.maintenance.reachable import content_files_of, manifests_of
from icebergdo.store import Store, is_under, normalise

_METADATA_VERSION = re.compile(r"^v?(\d+)(?:-[^/]*)?\.metadata\.json$")
MAX_ATTEMPTS = 10


def snapshots_to_expire(table: Table, *, older_than: datetime | None = None, retain_last: int | None = None) -> list[int]:
    """Ids of the snapshots expiry would remove (protected heads and the newest `retain_last` excluded)."""
    md = table.metadata
    if older_than is None:
        age_ms = int(md.properties.get(MAX_SNAPSHOT_AGE_PROPERTY, MAX_SNAPSHOT_AGE_DEFAULT_MS))
        older_than = datetime.now(UTC) - timedelta(milliseconds=age_ms)
    if retain_last is None:
        retain_last = int(md.properties.get(MIN_SNAPSHOTS_PROPERTY, MIN_SNAPSHOTS_DEFAULT))
    retain_last = max(1, retain_last)
    cutoff_ms = int(older_than.timestamp() * 1000)
    protected = {ref.snapshot_id for ref in md.refs.values() if ref.snapshot_ref_type in (SnapshotRefType.TAG, SnapshotRefType.BRANCH)}
    # The newest `retain_last` ancestors of every branch head stay (Iceberg: per branch).
    for ref in md.refs.values():
        if ref.snapshot_ref_type != SnapshotRefType.BRANCH:
            continue
        keep = ref.min_snapshots_to_keep or retain_last
        snap = md.snapshot_by_id(ref.snapshot_id)
        while snap is not None and keep > 0:
            protected.add(snap.snapshot_id)
            keep -= 1
            snap = md.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id is not None else None
    return sorted(s.snapshot_id for s in md.snapshots if s.timestamp_ms < cutoff_ms and s.snapshot_id not in protected)


def freed_files(expired: list[Snapshot], remaining: list[Snapshot], io: FileIO) -> tuple[dict[str, int], set[str]]:
    """(content files with sizes, manifests + manifest lists) that only `expired` snapshots reach.

    A file live in an expired snapshot's manifest M stays live if M is still listed by a remaining
    snapshot, so candidates come only from manifests no remaining snapshot lists (cheap for
    append-only history: none); they are then checked against every remaining live file, since a
    manifest rewrite may have moved them.
    """
    old = manifests_of(expired, io)
    new = manifests_of(remaining, io)
    gone_manifests = {p: m for p, m in old.items() if p not in new}
    candidates = content_files_of(gone_manifests.values(), io, live_only=True)
    if candidates:
        still = content_files_of(new.values(), io, live_only=True)
        candidates = {p: size for p, size in candidates.items() if p not in still}
    lists = {normalise(s.manifest_list) for s in expired if s.manifest_list}
    lists -= {normalise(s.manifest_list) for s in remaining if s.manifest_list}
    return candidates, set(gone_manifests) | lists


def _metadata_version(path: str) -> int | None:
    m = _METADATA_VERSION.match(posixpath.basename(path))
    return int(m.group(1)) if m else None


def stale_metadata_files(table: Table, store: Store) -> dict[str, int]:
    """Metadata JSON files in the table's metadata folder older than the oldest metadata-log entry."""
    md = table.metadata
    keep = {normalise(table.metadata_location)} | {normalise(e.metadata_file) for e in md.metadata_log}
    versions = [v for v in (_metadata_version(p) for p in keep) if v is not None]
    if not versions:
        return {}
    oldest_kept = min(versions)
    folder = table_prefixes(table).metadata
    out = {}
    for info in store.list(folder):
        base = posixpath.basename(info.path)
        if base == VERSION_HINT or info.path in keep or not is_under(info.path, folder):
            continue
        v = _metadata_version(info.path)
        if v is not None and v < oldest_kept and posixpath.dirname(info.path) == normalise(folder):
            out[info.path] = info.size
    return out


def expire(
    table: Table,
    *,
    store: Store,
    dry_run: bool = False,
    older_than: datetime | None = None,
    retain_last: int | None = None,
    delete_files: bool = True,
    progress: Callable[[str], None] = lambda _m: None,
) -> StepReport:
    """Expire snapshots and delete the files only they referenced."""
    started = time.monotonic()
    name = table_name(table)
    report = StepReport(name, "expire", dry_run)
    for attempt in range(MAX_ATTEMPTS):
        ids = snapshots_to_expire(table, older_than=older_than, retain_last=retain_last)
        before = table.metadata
        report.details["snapshots_expired"] = len(ids)
        if dry_run:
            if ids:
                gone_content, gone_meta = freed_files(
                    [s for s in before.snapshots if s.snapshot_id in set(ids)],
                    [s for s in before.snapshots if s.snapshot_id not in set(ids)],
                    table.io,
                )
                report.files_in = len(gone_content) + len(gone_meta)
                report.bytes_in = sum(gone_content.values()) + sum(store.sizes(gone_meta).values())
            stale = stale_metadata_files(table, store)
            report.files_in += len(stale)
            report.bytes_in += sum(stale.values())
            report.seconds = time.monotonic() - started
            return report
        if not ids:
            break
        try:
            table.maintenance.expire_snapshots().by_ids(ids).commit()
            break
        except CommitFailedException:
            table = table.refresh()
            progress(f"{name}: expiry conflicted with a concurrent commit, retrying ({attempt + 1})")
    else:
        raise CommitFailedException(f"{name}: snapshot expiry could not commit after {MAX_ATTEMPTS} attempts")
    table = table.refresh()
    after = table.metadata
    if ids and delete_files:
        progress(f"{name}: expired {len(ids)} snapshot(s); finding unreferenced files")
        gone_content, gone_meta = freed_files(
            [s for s in before.snapshots if s.snapshot_id in set(ids)], list(after.snapshots), table.io
        )
        sizes = store.sizes(gone_meta)
        progress(f"{name}: deleting {len(gone_content)} data/delete file(s), {len(gone_meta)} manifest(s)/list(s)")
        store.delete(sorted(gone_content))
        store.delete(sorted(gone_meta))
        report.files_in = len(gone_content) + len(gone_meta)
        report.bytes_in = sum(gone_content.values()) + sum(sizes.values())
    if delete_files:
        stale = stale_metadata_files(table, store)
        if stale:
            store.delete(sorted(stale))
            report.files_in += len(stale)
            report.bytes_in += sum(stale.values())
        report.details["metadata_files_deleted"] = len(stale)
    report.seconds = time.monotonic() - started
    return report
