"""Which files a table's metadata references: the ground truth for expiry and orphan removal.

Manifests are shared by many snapshots, so each is read once per call. For orphan removal,
entries of every status (added, existing, deleted) count as referenced: a conservative reading
that can only keep a file longer. Expiry uses live entries only, like Iceberg.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pyiceberg.io import FileIO
from pyiceberg.manifest import ManifestFile
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot

from icebergdo.store import normalise


@dataclass
class Reachable:
    """Normalised paths referenced by a set of snapshots (plus, optionally, metadata files)."""

    manifest_lists: set[str] = field(default_factory=set)
    manifests: set[str] = field(default_factory=set)
    content_files: dict[str, int] = field(default_factory=dict)  # path -> size in bytes
    metadata_files: set[str] = field(default_factory=set)
    other: set[str] = field(default_factory=set)  # statistics / partition statistics files

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
