"""Which files a table's metadata references: the ground truth for expiry and orphan removal.

Manifests are shared by many snapshots, so each is read once per call. For orphan removal,
entries of every status (added, existing, deleted) count as referenced: a conservative reading
that can only keep a file longer. Expiry uses live entries only, like Iceberg.

Orphan removal also needs what *older* metadata versions reference (`referenced_by_history`):
a reader that loaded the table a moment ago, or a writer whose commit is being retried, still
works from one of the versions in the metadata log, so their files are not orphans either.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pyiceberg.io import FileIO
from pyiceberg.manifest import ManifestFile
from pyiceberg.serializers import FromInputFile
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot

from icebergdo.errors import StorageError
from icebergdo.store import normalise

log = logging.getLogger(__name__)


@dataclass
class Reachable:
    """Normalised paths referenced by a set of snapshots (plus, optionally, metadata files)."""

    manifest_lists: set[str] = field(default_factory=set)
    manifests: set[str] = field(default_factory=set)
    content_files: dict[str, int] = field(default_factory=dict)  # path -> size in bytes
    metadata_files: set[str] = field(default_factory=set)
    other: set[str] = field(default_factory=set)  # statistics / partition statistics files
    snapshot_ids: set[int] = field(default_factory=set)  # the snapshots walked (for incremental calls)

    def all(self) -> set[str]:
        return self.manifest_lists | self.manifests | set(self.content_files) | self.metadata_files | self.other


def manifests_of(snapshots: Iterable[Snapshot], io: FileIO) -> dict[str, ManifestFile]:
    """Every manifest listed by these snapshots' manifest lists, by normalised path."""
    out: dict[str, ManifestFile] = {}
    snaps = list(snapshots)
    with ThreadPoolExecutor(max_workers=8) as pool:
        for manifests in pool.map(lambda s: s.manifests(io), snaps):
            for m in manifests:
                out.setdefault(normalise(m.manifest_path), m)
    return out


def content_files_of(manifests: Iterable[ManifestFile], io: FileIO, *, live_only: bool = False) -> dict[str, int]:
    """Data and delete files named by these manifests, with their sizes.

    `live_only` skips entries with status DELETED: what a reader of these snapshots can open
    (expiry's rule, as in Iceberg). Without it every mention counts (orphan removal's rule).
    """
    out: dict[str, int] = {}

    def read(m: ManifestFile) -> list[tuple[str, int]]:
        return [
            (normalise(e.data_file.file_path), int(e.data_file.file_size_in_bytes))
            for e in m.fetch_manifest_entry(io, discard_deleted=live_only)
        ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        for pairs in pool.map(read, list(manifests)):
            out.update(pairs)
    return out


def reachable(
    metadata: TableMetadata,
    io: FileIO,
    *,
    snapshots: Iterable[Snapshot] | None = None,
    metadata_location: str | None = None,
    live_only: bool = False,
) -> Reachable:
    """Files referenced by `snapshots` (default: all of the metadata's), plus its metadata files."""
    snaps = list(metadata.snapshots if snapshots is None else snapshots)
    r = Reachable()
    r.manifest_lists = {normalise(s.manifest_list) for s in snaps if s.manifest_list}
    manifests = manifests_of(snaps, io)
    r.manifests = set(manifests)
    r.content_files = content_files_of(manifests.values(), io, live_only=live_only)
    if metadata_location:
        r.metadata_files.add(normalise(metadata_location))
    r.metadata_files |= {normalise(entry.metadata_file) for entry in metadata.metadata_log}
    for stats in metadata.statistics:
        r.other.add(normalise(stats.statistics_path))
    for pstats in getattr(metadata, "partition_statistics", []) or []:
        r.other.add(normalise(pstats.statistics_path))
    return r


def _is_missing(e: BaseException) -> bool:
    return isinstance(e, FileNotFoundError) or "No such file" in str(e) or "does not exist" in str(e)


def _metadata_statistics(metadata: TableMetadata) -> set[str]:
    out = {normalise(s.statistics_path) for s in metadata.statistics}
    out |= {normalise(p.statistics_path) for p in getattr(metadata, "partition_statistics", []) or []}
    return out


def referenced_by_history(
    metadata: TableMetadata, io: FileIO, metadata_location: str, *, seen: Reachable | None = None
) -> Reachable:
    """Files referenced by `metadata` and by every metadata version in its metadata log (all statuses).

    Incremental: snapshots, manifests and metadata files already in `seen` are not read again, so
    a second call after reloading the table only reads what was committed in between; the result
    includes `seen`. An old version's files that are already gone (freed by an expiry since) are
    skipped; a file the *current* metadata references that is gone raises `StorageError` (the
    table is damaged: deleting more would not help).
    """
    r = Reachable() if seen is None else Reachable(
        set(seen.manifest_lists), set(seen.manifests), dict(seen.content_files), set(seen.metadata_files), set(seen.other), set(seen.snapshot_ids)
    )
    current = {s.snapshot_id for s in metadata.snapshots}
    versions = [metadata]
    r.metadata_files.add(normalise(metadata_location))
    for entry in metadata.metadata_log:
        path = normalise(entry.metadata_file)
        if path in r.metadata_files:
            continue
        r.metadata_files.add(path)
        try:
            versions.append(FromInputFile.table_metadata(io.new_input(entry.metadata_file)))
        except Exception as e:  # noqa: BLE001 - pyarrow/fsspec raise several types for a missing file
            if not _is_missing(e):
                raise
            log.debug("metadata version %s is gone; skipping it", path)
    snaps: dict[int, Snapshot] = {}
    for md in versions:
        r.other |= _metadata_statistics(md)
        for snap in md.snapshots:
            if snap.snapshot_id not in r.snapshot_ids:
                snaps.setdefault(snap.snapshot_id, snap)

    def manifests(snap: Snapshot) -> list[ManifestFile]:
        try:
            return snap.manifests(io)
        except Exception as e:  # noqa: BLE001
            if not _is_missing(e) or snap.snapshot_id in current:
                raise StorageError(f"manifest list {snap.manifest_list} of snapshot {snap.snapshot_id} cannot be read: {e}") from None
            return []  # an expired snapshot of an old version whose files were already freed

    new_manifests: dict[str, tuple[ManifestFile, bool]] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        for snap, listed in zip(snaps.values(), pool.map(manifests, list(snaps.values())), strict=True):
            if snap.manifest_list:
                r.manifest_lists.add(normalise(snap.manifest_list))
            for m in listed:
                path = normalise(m.manifest_path)
                if path not in r.manifests:
                    in_current = snap.snapshot_id in current or new_manifests.get(path, (m, False))[1]
                    new_manifests[path] = (m, in_current)
    r.snapshot_ids |= set(snaps)

    def entries(item: tuple[ManifestFile, bool]) -> list[tuple[str, int]]:
        m, in_current = item
        try:
            return [(normalise(e.data_file.file_path), int(e.data_file.file_size_in_bytes)) for e in m.fetch_manifest_entry(io, discard_deleted=False)]
        except Exception as e:  # noqa: BLE001
            if not _is_missing(e) or in_current:
                raise StorageError(f"manifest {m.manifest_path} cannot be read: {e}") from None
            return []

    with ThreadPoolExecutor(max_workers=8) as pool:
        for pairs in pool.map(entries, list(new_manifests.values())):
            r.content_files.update(pairs)
    r.manifests |= set(new_manifests)
    return r
