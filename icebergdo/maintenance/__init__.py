"""Table maintenance: retention, compaction, manifest rewrite, snapshot expiry, orphan removal.

    options.py        the job names and `MaintenanceOptions` (flags, `[maintenance]`, API)
    driver.py         `maintain` / `plan` / `run_every` (`every`: the one --every loop): validation, locking, plans, reports
    steps.py          one function per job: the python run and the planner of each job
    python_engine.py  icebergdo's own jobs (the default engine)
    spark_engine.py   Iceberg's stored procedures through Spark
    compact.py, manifests.py, expire.py, retention.py, orphans.py, ...   the jobs themselves

`maintain()` runs the jobs per table, in that order, under a per-table lock in the catalog
database, and returns one `StepReport` per (table, job), whichever engine ran them. `plan()` is
the same as a dry run, without a lock. Defaults follow Apache Iceberg's actions; `[maintenance]`
in the config overrides them, `[retention]` holds per-table ages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from icebergdo.maintenance.common import StepReport, table_prefixes
from icebergdo.maintenance.driver import every, maintain, plan, plan_table, prepare, run_every
from icebergdo.maintenance.health import table_health
from icebergdo.maintenance.lock import last_run_of
from icebergdo.maintenance.options import ENGINES, STEPS, MaintenanceOptions
from icebergdo.store import Store
from icebergdo.tables import Tables

__all__ = ["ENGINES", "STEPS", "MaintenanceOptions", "StepReport", "health", "maintain", "plan", "plan_table", "prepare", "run_every", "every"]


def health(lh: Tables, tables: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Per-table health (see `health.table_health`)."""
    names = list(tables) if tables else lh.tables()
    loaded = {n: lh.table(n) for n in lh.tables()}
    for n in names:
        if n not in loaded:
            lh.table(n)
    prefixes = {n: table_prefixes(t).all() for n, t in loaded.items()}
    store = Store(lh.config)
    out = []
    for n in names:
        others = [p for m, ps in prefixes.items() if m != n for p in ps]
        out.append(table_health(loaded[n], store, others, last_run_of(lh, n)))
    return out
