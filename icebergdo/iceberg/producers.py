"""Snapshot producers pyiceberg 0.12 lacks: replace data files (compaction), and rewrite manifests.

Both commit a `replace` snapshot (Iceberg's operation for "same rows, different files"), so
incremental readers that follow appends skip them; compaction that also drops duplicate rows
(`icebergdo.dedupe`) commits an `overwrite`, since the data changes. Both ride on pyiceberg's own
retry loop: on a concurrent commit the producer is rebuilt against the new head.

`MetadataCachingTransaction`: pyiceberg's `Transaction.table_metadata` deep-copies the whole table
metadata on every access, and one snapshot commit reads it ~20 times: with 70 snapshots in the
history that was 0.7 s of CPU for one compaction commit. The metadata models are immutable, so
the result is computed once per (base metadata, pending updates) instead.
"""

from __future__ import annotations

from typing import Any

from pyiceberg.manifest import DataFile, ManifestContent, ManifestFile
from pyiceberg.table import TableProperties, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import (
    _FastAppendFiles,
    _ManifestMergeManager,
    _OverwriteFiles,
)
from pyiceberg.table.update.validate import (
    _validate_data_files_exist,
    _validate_no_new_deletes_for_data_files,
)
from pyiceberg.utils.properties import property_as_int


class MetadataCachingTransaction(Transaction):
    """A `Transaction` that computes `table_metadata` once per (base metadata, pending updates)."""

    _cached: tuple[Any, Any, TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        cached = self._cached
        if cached is None or cached[0] is not base or cached[1] is not updates:
            cached = (base, updates, super().table_metadata)
            self._cached = cached
        return cached[2]


def _as_replace(summary: Summary) -> Summary:
    return Summary(Operation.REPLACE, **dict(summary.additional_properties))


class ReplaceDataFiles(_OverwriteFiles):
    """Remove exactly the given data files and add the given ones (compaction).

    Snapshot isolation, like Iceberg's RewriteFiles: concurrent appends are fine (their manifests
    are carried over on retry); the commit fails with ValidationException only if an input file
    was removed meanwhile or a delete file now applies to one. The snapshot's operation is
    `replace`, or `overwrite` when constructed with `Operation.OVERWRITE` (rows were dropped).
    """

    def __init__(self, operation: Operation, *args: Any, **kwargs: Any) -> None:
        super().__init__(operation, *args, **kwargs)
        self._final_operation = operation
        self._required: set[DataFile] = set()

    def require_data_file(self, data_file: DataFile) -> None:
        """Fail the commit (ValidationException) if `data_file` was removed concurrently, as for an input."""
        self._required.add(data_file)

    def _validate_concurrency(self) -> None:
        window = self._commit_window
        if window is None or window.is_empty() or window.head is None:
            return
        table = self._transaction._table
        _validate_data_files_exist(table, window.head, self._deleted_data_files | self._required, window.base)
        _validate_no_new_deletes_for_data_files(table, window.head, None, self._deleted_data_files, window.base)

    def _summary(self, snapshot_properties: dict[str, str] | None = None) -> Summary:
        # pyiceberg computes totals only for append/overwrite/delete; the counts are the same for replace.
        self._operation = Operation.OVERWRITE
        try:
            summary = super()._summary(snapshot_properties or {})
        finally:
            self._operation = self._final_operation
        return summary if self._final_operation == Operation.OVERWRITE else _as_replace(summary)


class RewriteManifests(_FastAppendFiles):
    """Merge the current snapshot's data manifests into few, target-sized ones; no data change.

    Recomputed from the branch head on every attempt, so it never needs conflict validation.
    """

    def _process_manifests(self, manifests: list[ManifestFile]) -> list[ManifestFile]:
        props = self._transaction.table_metadata.properties
        target = property_as_int(props, TableProperties.MANIFEST_TARGET_SIZE_BYTES, TableProperties.MANIFEST_TARGET_SIZE_BYTES_DEFAULT) or 1
        data = [m for m in manifests if m.content == ManifestContent.DATA]
        deletes = [m for m in manifests if m.content == ManifestContent.DELETES]
        merger = _ManifestMergeManager(target_size_bytes=target, min_count_to_merge=2, merge_enabled=True, snapshot_producer=self)
        return merger.merge_manifests(data) + deletes

    def _summary(self, snapshot_properties: dict[str, str] | None = None) -> Summary:
        self._operation = Operation.APPEND
        try:
            summary = super()._summary(snapshot_properties or {})
        finally:
            self._operation = Operation.REPLACE
        return _as_replace(summary)
