"""Manifest rewrite: merge the one-manifest-per-append pile into few target-sized manifests.

Every fast append adds a manifest and the next commit rewrites a manifest list naming all of
them, so commit and planning time grow with history. Merging them (Iceberg's
`rewrite_manifests`) keeps both flat. The commit is a `replace` snapshot with no data change.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pyiceberg.manifest import ManifestContent
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.snapshots import Operation
from pyiceberg.utils.properties import property_as_int

from icebergdo.iceberg.producers import MetadataCachingTransaction, RewriteManifests
from icebergdo.maintenance.common import StepReport, table_name

MIN_MANIFESTS_DEFAULT = 2


def rewrite_manifests(
    table: Table,
    *,
    dry_run: bool = False,
    min_manifests: int = MIN_MANIFESTS_DEFAULT,
    progress: Callable[[str], None] = lambda _m: None,
) -> StepReport:
    """Merge data manifests when the current snapshot has at least `min_manifests` small ones."""
    started = time.monotonic()
    name = table_name(table)
    report = StepReport(name, "manifests", dry_run)
    snap = table.current_snapshot()
    if snap is None:
        return report
    target = property_as_int(table.properties, TableProperties.MANIFEST_TARGET_SIZE_BYTES, TableProperties.MANIFEST_TARGET_SIZE_BYTES_DEFAULT) or 1
    data = [m for m in snap.manifests(table.io) if m.content == ManifestContent.DATA]
    small = [m for m in data if m.manifest_length < target]
    if len(small) < max(2, min_manifests):
        report.details["manifests"] = len(data)
        report.seconds = time.monotonic() - started
        return report
    report.files_in = len(small)
    report.bytes_in = sum(m.manifest_length for m in small)
    report.details["manifests_before"] = len(data)
    if dry_run:
        report.files_out = max(1, -(-report.bytes_in // target))
        report.seconds = time.monotonic() - started
        return report
    progress(f"{name}: merging {len(data)} manifests")
    tx = MetadataCachingTransaction(table)
    producer = RewriteManifests(
        operation=Operation.REPLACE, transaction=tx, io=table.io, snapshot_properties={"icebergdo.maintenance": "rewrite-manifests"}
    )
    producer.commit()
    table = tx.commit_transaction()
    new = table.current_snapshot()
    after = [m for m in new.manifests(table.io) if m.content == ManifestContent.DATA] if new else []
    report.snapshot_id = new.snapshot_id if new else None
    report.files_out = len(after)
    report.bytes_out = sum(m.manifest_length for m in after)
    report.details["manifests_after"] = len(after)
    report.seconds = time.monotonic() - started
    return report
