"""One function per maintenance job, as the python engine runs it and as every plan is made.

Each function takes a `TableContext` (one table, this run's options and shared state) and
`dry_run`; with `dry_run=True` it is the planner of that job: what it would rewrite or delete,
changing nothing. The driver's `plan()` and both engines' dry runs are these planners, so a plan
reads the same whichever engine will run it (and a "due / not due" health planner can call them one by one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pyiceberg.table import Table

from icebergdo.errors import UnsafePrefixError
from icebergdo.maintenance.common import StepReport
from icebergdo.maintenance.compact import compact as compact_job
from icebergdo.maintenance.expire import expire as expire_job
from icebergdo.maintenance.manifests import rewrite_manifests
from icebergdo.maintenance.options import MaintenanceOptions
from icebergdo.maintenance.orphans import remove_orphans
from icebergdo.maintenance.retention import apply_retention
from icebergdo.store import Store
from icebergdo.tables import Tables


def _quiet(_msg: str) -> None:
    pass


@dataclass
class TableContext:
    """Everything a job on one table needs from its run."""

    lh: Tables
    name: str
    options: MaintenanceOptions
    store: Store
    retention_age: float | None = None  # seconds, from [retention]; None: not under retention
    other_prefixes: list[str] = field(default_factory=list)  # every other table's prefixes
    progress: Callable[[str], None] = _quiet

    @property
    def warehouse(self) -> str:
        return self.lh.config.warehouse

    def table(self) -> Table:
        """Fresh metadata: every job starts from the commits of the jobs before it."""
        return self.lh.table(self.name)


def retention(ctx: TableContext, *, dry_run: bool) -> StepReport | None:
    """Drop partitions older than the table's `[retention]` age; None for a table without one."""
    if ctx.retention_age is None:
        return None
    return apply_retention(ctx.table(), max_age=ctx.retention_age, warehouse=ctx.warehouse, dry_run=dry_run, progress=ctx.progress)


def compact(ctx: TableContext, *, dry_run: bool) -> StepReport:
    o = ctx.options
    return compact_job(
        ctx.table(),
        store=ctx.store,
        dry_run=dry_run,
        target_size=o.target_file_size,
        min_input_files=o.min_input_files,
        rollup_after=o.rollup_after,
        progress=ctx.progress,
        reload=ctx.table,
    )


def manifests(ctx: TableContext, *, dry_run: bool) -> StepReport:
    return rewrite_manifests(ctx.table(), dry_run=dry_run, progress=ctx.progress)


def expire_cutoff(options: MaintenanceOptions) -> datetime | None:
    return datetime.now(UTC) - timedelta(seconds=options.older_than) if options.older_than is not None else None


def expire(ctx: TableContext, *, dry_run: bool) -> StepReport:
    o = ctx.options
    return expire_job(ctx.table(), store=ctx.store, dry_run=dry_run, older_than=expire_cutoff(o), retain_last=o.retain_last, progress=ctx.progress)


def orphans(ctx: TableContext, *, dry_run: bool) -> StepReport:
    """Orphan removal; a table whose prefixes fail the safety check is refused (a note), not an error."""
    try:
        return remove_orphans(
            ctx.table(),
            store=ctx.store,
            warehouse=ctx.warehouse,
            other_prefixes=ctx.other_prefixes,
            older_than_s=ctx.options.orphan_age,
            unsafe_age=ctx.options.unsafe_orphan_age,
            dry_run=dry_run,
            progress=ctx.progress,
        )
    except UnsafePrefixError as e:  # refuse this table, keep maintaining the others
        ctx.progress(f"{ctx.name}: orphan removal refused: {e}")
        return refused(ctx.name, "orphans", dry_run, e)


def refused(name: str, step: str, dry_run: bool, error: Exception) -> StepReport:
    return StepReport(name, step, dry_run, notes=[f"refused: {error}"])


JOBS: dict[str, Callable[..., StepReport | None]] = {
    "retention": retention,
    "compact": compact,
    "manifests": manifests,
    "expire": expire,
    "orphans": orphans,
}


def plan_step(step: str, ctx: TableContext) -> StepReport | None:
    """What `step` would do on `ctx`'s table now (None: the job does not apply to it)."""
    return JOBS[step](ctx, dry_run=True)
