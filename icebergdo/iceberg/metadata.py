"""Applying table updates to metadata without pyiceberg's defensive deep copy.

`pyiceberg.table.update.update_table_metadata` ends with `model_copy(deep=True)` of the whole
metadata: every snapshot, summary and schema. A transaction computes it on every access of
`Transaction.table_metadata` (a snapshot producer reads that ~15 times per commit) and the catalog
once more per commit, so commit cost grew with the snapshots kept (profiled: 80 % of a small commit
with 300 snapshots). The copy protects nothing: metadata models are frozen, and every update
builds new containers (`snapshots + [s]`, `dict(properties)`) instead of changing the old ones, so
the result may share them with its base. `apply_updates` is that function without the copy; the
rest is pyiceberg's own update logic, called as it is.
"""

from __future__ import annotations

from datetime import datetime

from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import (
    TableUpdate,
    _apply_table_update,
    _TableMetadataUpdateContext,
    _update_table_metadata_log,
)
from pyiceberg.utils.datetime import datetime_to_millis


def apply_updates(base: TableMetadata, updates: tuple[TableUpdate, ...], metadata_location: str | None = None) -> TableMetadata:
    """`update_table_metadata(base, updates, metadata_location=...)` (no validation mode), sharing unchanged parts with `base`."""
    if not updates:
        return base
    context = _TableMetadataUpdateContext()
    new = base
    for update in updates:
        new = _apply_table_update(update, new, context)
    if context.has_changes():
        if metadata_location:
            new = _update_table_metadata_log(new, metadata_location, base.last_updated_ms)
        if base.last_updated_ms == new.last_updated_ms:
            new = new.model_copy(update={"last_updated_ms": datetime_to_millis(datetime.now().astimezone())})
    new.spec().check_compatible(new.schema())
    new.sort_order().check_compatible(new.schema())
    return new
