"""Retention: drop whole time partitions older than a per-table age, from the `[retention]` config.

    [retention]
    "events.raw" = "90d"
    "shop.orders__deltas" = "30d"

The cutoff is rounded down to the table's time-partition boundary (hour, day, month, year), so
only partitions entirely older than the age go, and their files are dropped by a metadata-only
delete. The bytes are freed by the next snapshot expiry. A CDC current-state table is refused:
its rows are the present, whatever their age.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.table import Table
from pyiceberg.transforms import (
    DayTransform,
    HourTransform,
    MonthTransform,
    YearTransform,
)

from icebergdo import layout
from icebergdo.config import Config
from icebergdo.errors import BadInputError, ConfigError
from icebergdo.iceberg import filters
from icebergdo.maintenance.common import (
    StepReport,
    parse_duration,
    table_name,
    table_prefixes,
)
from icebergdo.maintenance.compact import partition_end
from icebergdo.store import normalise

CDC_ROLE_PROPERTY = "icebergdo.cdc.role"
MAX_ATTEMPTS = 5


def policies(config: Config) -> dict[str, float]:
    """`[retention]` as {table: seconds}; bad names or durations name the key at fault."""
    out = {}
    for key, value in config.section("retention").items():
        try:
            layout.split_identifier(key)
        except BadInputError as e:
            raise ConfigError(f"{config.source}: [retention] {key!r}: {e}") from None
        seconds = parse_duration(value, where=f"{config.source}: [retention] {key!r}")
        if seconds <= 0:
            raise ConfigError(f"{config.source}: [retention] {key!r}: the age must be positive")
        out[key] = seconds
    return out


def is_cdc_state(table: Table, warehouse: str) -> bool:
    """A CDC current-state table: tagged by the CDC module, or writing to `{warehouse}/{ns}/{coll}/data`."""
    role = table.properties.get(CDC_ROLE_PROPERTY)
    if role is not None:
        return role in ("state", "current", "current-state")
    data = normalise(table_prefixes(table).data)
    root = normalise(warehouse)
    if not data.startswith(root + "/"):
        return False
    parts = data[len(root) + 1 :].split("/")
    return len(parts) == 3 and parts[2] == "data"


def time_field(table: Table) -> tuple[str, Any]:
    """(source column, transform) of the first time partition field of the current spec."""
    spec = table.spec()
    for pf in spec.fields:
        if isinstance(pf.transform, (HourTransform, DayTransform, MonthTransform, YearTransform)):
            column = table.schema().find_column_name(pf.source_id)
            if column is not None:
                return column, pf.transform
    raise BadInputError(f"{table_name(table)}: retention needs a time-partitioned table (hour/day/month/year partition)")


def aligned_cutoff(cutoff: datetime, transform: Any) -> datetime:
    """Round down to the start of the partition containing `cutoff`."""
    c = cutoff.astimezone(UTC)
    if isinstance(transform, HourTransform):
        return c.replace(minute=0, second=0, microsecond=0)
    if isinstance(transform, DayTransform):
        return c.replace(hour=0, minute=0, second=0, microsecond=0)
    if isinstance(transform, MonthTransform):
        return c.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return c.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)


def apply_retention(
    table: Table,
    *,
    max_age: float,
    warehouse: str,
    dry_run: bool = False,
    now: datetime | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> StepReport:
    """Delete the partitions entirely older than `max_age` seconds (metadata-only where bounds allow)."""
    started = time.monotonic()
    name = table_name(table)
    if is_cdc_state(table, warehouse):
        raise BadInputError(f"{name}: refusing a retention policy on a CDC current-state table (its rows are never aged out)")
    column, transform = time_field(table)
    cutoff = aligned_cutoff((now or datetime.now(UTC)) - timedelta(seconds=max_age), transform)
    report = StepReport(name, "retention", dry_run)
    report.details["cutoff"] = cutoff.isoformat()
    specs = table.specs()
    doomed = []
    partitions = set()
    if table.current_snapshot() is not None:
        for task in table.scan().plan_files():
            end = partition_end(specs[task.file.spec_id], task.file.partition)
            if end is not None and end <= cutoff:
                doomed.append(task.file)
                partitions.add((task.file.spec_id, task.file.partition))
    report.files_in = len(doomed)
    report.bytes_in = sum(f.file_size_in_bytes for f in doomed)
    report.details["partitions"] = len(partitions)
    if dry_run or not doomed:
        report.seconds = time.monotonic() - started
        return report
    progress(f"{name}: dropping {len(partitions)} partition(s) older than {cutoff.isoformat()}")
    predicate = filters.lt(column, cutoff.isoformat())
    for attempt in range(MAX_ATTEMPTS):
        try:
            table.delete(delete_filter=predicate, snapshot_properties={"icebergdo.maintenance": "retention"})
            break
        except (CommitFailedException, ValidationException):
            if attempt == MAX_ATTEMPTS - 1:
                raise
            table = table.refresh()
    snap = table.current_snapshot()
    report.snapshot_id = snap.snapshot_id if snap else None
    report.seconds = time.monotonic() - started
    return report
