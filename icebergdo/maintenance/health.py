"""`icebergdo health`: is a table due for maintenance? Counts from metadata plus one listing."""

from __future__ import annotations

from typing import Any

from pyiceberg.manifest import ManifestContent
from pyiceberg.table import Table

from icebergdo.maintenance.common import (
    SMALL_FILE_RATIO,
    table_name,
    table_prefixes,
    target_file_size,
)
from icebergdo.maintenance.reachable import reachable
from icebergdo.store import Store, is_under


def table_health(table: Table, store: Store, other_prefixes: list[str], last_run: tuple[float | None, Any]) -> dict[str, Any]:
    """Snapshots, data files, small files, average size, manifests, unreferenced bytes, last run."""
    snap = table.current_snapshot()
    files = list(table.scan().plan_files()) if snap else []
    sizes = [t.file.file_size_in_bytes for t in files]
    small = int(target_file_size(table) * SMALL_FILE_RATIO)
    manifests = snap.manifests(table.io) if snap else []
    refs = reachable(table.metadata, table.io, metadata_location=table.metadata_location).all()
    unref_files = unref_bytes = 0
    for prefix in table_prefixes(table).all():
        excluded = [o for o in other_prefixes if is_under(o, prefix)]
        for info in store.list(prefix):
            if info.path in refs or info.path.endswith("/version-hint.text") or any(is_under(info.path, e) for e in excluded):
                continue
            unref_files += 1
            unref_bytes += info.size
    when, summary = last_run
    return {
        "table": table_name(table),
        "snapshots": len(table.metadata.snapshots),
        "data_files": len(files),
        "small_files": sum(1 for s in sizes if s < small),
        "avg_file_bytes": int(sum(sizes) / len(sizes)) if sizes else 0,
        "data_bytes": sum(sizes),
        "manifests": sum(1 for m in manifests if m.content == ManifestContent.DATA),
        "delete_manifests": sum(1 for m in manifests if m.content == ManifestContent.DELETES),
        "unreferenced_files": unref_files,
        "unreferenced_bytes": unref_bytes,
        "last_maintenance": when,
        "last_maintenance_summary": summary,
    }
