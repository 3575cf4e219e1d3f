"""What every maintenance job shares: its report, duration parsing, and a table's own prefixes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pyiceberg.table import Table, TableProperties

from icebergdo import layout, units
from icebergdo.iceberg import datafiles

DAY_MS = 86_400_000
# Iceberg's defaults (TableProperties / Java actions), so behaviour matches Spark's procedures.
MAX_SNAPSHOT_AGE_PROPERTY = "history.expire.max-snapshot-age-ms"
MAX_SNAPSHOT_AGE_DEFAULT_MS = 5 * DAY_MS
MIN_SNAPSHOTS_PROPERTY = "history.expire.min-snapshots-to-keep"
MIN_SNAPSHOTS_DEFAULT = 1
ORPHAN_AGE_DEFAULT_S = 3 * 86_400
ORPHAN_AGE_FLOOR_S = 3_600.0  # shorter windows need an explicit `unsafe_orphan_age`
MIN_INPUT_FILES_DEFAULT = 5
SMALL_FILE_RATIO = 0.75


def parse_duration(text: str | float, where: str = "duration") -> float:
    """`90d`, `12h`, `30m`, `45s`, `500ms`, `1w`, `1h30m` (or a bare number of seconds) → seconds (`icebergdo.units`)."""
    return units.parse_duration(text, where=where)


@dataclass
class StepReport:
    """One job on one table: what it would do (dry run) or did."""

    table: str
    step: str
    dry_run: bool
    files_in: int = 0  # files rewritten or deleted
    bytes_in: int = 0
    files_out: int = 0  # files written
    bytes_out: int = 0
    snapshot_id: int | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def target_file_size(table: Table) -> int:
    return datafiles.target_file_size(table.properties)


@dataclass(frozen=True)
class TablePrefixes:
    """Where a table writes: data files, metadata JSON, manifests (ADR layout or Iceberg defaults)."""

    data: str
    metadata: str
    manifests: str

    def all(self) -> list[str]:
        return sorted({self.data, self.metadata, self.manifests})


def table_prefixes(table: Table) -> TablePrefixes:
    props = table.properties
    location = table.metadata.location.rstrip("/")
    return TablePrefixes(
        data=(props.get(TableProperties.WRITE_DATA_PATH) or f"{location}/data").rstrip("/"),
        metadata=(props.get(TableProperties.WRITE_METADATA_PATH) or f"{location}/metadata").rstrip("/"),
        manifests=(props.get(layout.MANIFESTS_PATH_PROPERTY) or props.get(TableProperties.WRITE_METADATA_PATH) or f"{location}/metadata").rstrip("/"),
    )


def table_name(table: Table) -> str:
    return ".".join(table.name()[-2:])
