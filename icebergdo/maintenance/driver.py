"""One maintenance driver for both engines: what is the same whichever engine does the work.

    validate the jobs, the engine, the tables and [retention] (before any table is touched)
    → per table: plan (dry run, no lock)  or  lock → job by job: refresh the lease, run, report

The engine only runs one job on one table (`Engine.run`) and returns a `StepReport`; step
validation, the table check, the per-table lock (`lock.table_lock` with `lock_ttl`; a busy table is
skipped, or waited for up to `lock_wait`), the options (`MaintenanceOptions`, from `[maintenance]` unless given),
the orphan-prefix inputs, the dry-run plan and the last-run record are the driver's, so a run
with `engine="spark"` is checked, locked, planned and reported exactly like a python run. Plans
are always the python planners (`steps.plan_step`): Iceberg's procedures cannot dry-run.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from icebergdo.errors import BadInputError, BusyError, ConfigError
from icebergdo.maintenance import steps
from icebergdo.maintenance.common import StepReport, table_prefixes
from icebergdo.maintenance.lock import Lease, acquire, holder_of, table_lock
from icebergdo.maintenance.options import MaintenanceOptions, check_engine, check_steps
from icebergdo.maintenance.orphans import check_age
from icebergdo.maintenance.retention import is_cdc_state, policies
from icebergdo.maintenance.steps import TableContext
from icebergdo.store import Store
from icebergdo.tables import Tables


class Engine(Protocol):
    """Runs one job on one table; None when the job does not apply to the table."""

    name: str

    def run(self, step: str, ctx: TableContext) -> StepReport | None: ...

    def close(self) -> None: ...


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet(_msg: str) -> None:
    pass


def engine_for(name: str, lh: Tables, *, spark: Any = None) -> Engine:
    """The engine called `name`. The spark engine starts (or configures) a session on first use."""
    check_engine(name)
    if name == "spark":
        from icebergdo.maintenance.spark_engine import SparkEngine  # imports pyspark plumbing only when asked

        return SparkEngine(lh, spark)
    from icebergdo.maintenance.python_engine import PythonEngine

    return PythonEngine()


@dataclass
class Run:
    """A validated run: which tables and jobs, with which options, and what every job needs."""

    lh: Tables
    names: list[str]
    steps: list[str]
    options: MaintenanceOptions
    retention: dict[str, float]
    prefixes: dict[str, list[str]]
    store: Store

    def context(self, name: str, progress: Callable[[str], None]) -> TableContext:
        others = [p for n, ps in self.prefixes.items() if n != name for p in ps]
        return TableContext(self.lh, name, self.options, self.store, self.retention.get(name), others, progress)


def prepare(
    lh: Tables,
    tables: Iterable[str] | None = None,
    steps: Iterable[str] | None = None,
    options: MaintenanceOptions | None = None,
) -> Run:
    """Check everything a run depends on before any table is touched."""
    chosen = check_steps(steps)
    opts = options or MaintenanceOptions.from_config(lh.config.section("maintenance"), lh.config.source)
    retention = policies(lh.config)
    known = lh.tables()
    names = list(tables) if tables else list(known)
    for n in names:
        if n not in known:
            lh.table(n)  # raises NoSuchTableError naming the table
    for n in retention:
        if n not in known:
            raise ConfigError(f"{lh.config.source}: [retention] names table {n!r}, which does not exist")
    if "orphans" in chosen:  # refuse a window below the floor before any table is touched
        check_age("maintain", opts.orphan_age, opts.unsafe_orphan_age)
    if "retention" in chosen:  # refuse a bad policy before any table is touched
        for n in names:
            if n in retention and is_cdc_state(lh.table(n), lh.config.warehouse):
                raise BadInputError(f"{n}: refusing a retention policy on a CDC current-state table (its rows are never aged out)")
    prefixes = {n: table_prefixes(lh.table(n)).all() for n in sorted(known)} if "orphans" in chosen else {}
    return Run(lh, names, chosen, opts, retention, prefixes, Store(lh.config))


def plan_table(run: Run, name: str, progress: Callable[[str], None] = _quiet) -> list[StepReport]:
    """What each chosen job would do on one table now, job by job (no lock, nothing changes)."""
    ctx = run.context(name, progress)
    out = []
    for step in run.steps:
        progress(f"{name}: {step} (dry run)")
        report = steps.plan_step(step, ctx)
        if report is not None:
            out.append(report)
    return out


def _run_table(run: Run, name: str, engine: Engine, lock: Lease | None, progress: Callable[[str], None]) -> list[StepReport]:
    ctx = run.context(name, progress)
    reports = []
    for step in run.steps:
        if lock is not None:
            lock.refresh()
        progress(f"{name}: {step}{'' if engine.name == 'python' else f' ({engine.name})'}")
        report = engine.run(step, ctx)
        if report is not None:
            report.details.setdefault("engine", engine.name)
            reports.append(report)
    return reports


def maintain(
    lh: Tables,
    tables: Iterable[str] | None = None,
    steps: Iterable[str] | None = None,
    *,
    dry_run: bool = False,
    options: MaintenanceOptions | None = None,
    progress: Callable[[str], None] | None = _stderr,
    lock: bool = True,
    engine: str = "python",
    spark: Any = None,
) -> list[StepReport]:
    """Run the chosen jobs on each table (all tables, all jobs by default), one table at a time.

    `engine` is "python" (icebergdo's jobs) or "spark" (Iceberg's procedures through Spark;
    `spark=` an existing SparkSession to use, else a local one). A table whose lock another
    maintainer holds (after waiting `options.lock_wait`) is skipped: its report has the note
    "skipped: locked by another maintainer (...)" and `details["skipped"] == "locked"`. With
    `dry_run`: the plan.
    """
    check_engine(engine)
    progress = progress or _quiet
    run = prepare(lh, tables, steps, options)
    if dry_run:
        return [r for name in run.names for r in plan_table(run, name, progress)]
    eng = engine_for(engine, lh, spark=spark)
    reports: list[StepReport] = []
    try:
        for name in run.names:
            if not lock:
                reports += _run_table(run, name, eng, None, progress)
                continue
            tl = table_lock(lh, name, ttl=run.options.lock_ttl)  # a database row, or Iceberg tags on a REST catalog
            if not acquire(tl, run.options.lock_wait):
                note = f"skipped: locked by another maintainer ({holder_of(lh, name) or 'unknown'})"
                reports.append(StepReport(name, "all", dry_run, notes=[note], details={"skipped": "locked"}))
                progress(f"{name}: {note}")
                continue
            done: list[StepReport] = []
            try:
                done = _run_table(run, name, eng, tl, progress)
            finally:
                tl.release(summary={"engine": eng.name, "steps": [r.to_dict() for r in done]} if done else None)
            reports += done
    finally:
        eng.close()
    return reports


def plan(lh: Tables, tables: Iterable[str] | None = None, steps: Iterable[str] | None = None, **kw: Any) -> list[StepReport]:
    """What `maintain` would do: files and bytes per table and job; changes nothing, takes no lock."""
    kw.pop("lock", None)
    kw.pop("dry_run", None)
    return maintain(lh, tables, steps, dry_run=True, lock=False, **kw)


def run_every(
    lh: Tables,
    interval_s: float,
    tables: Iterable[str] | None = None,
    steps: Iterable[str] | None = None,
    *,
    options: MaintenanceOptions | None = None,
    progress: Callable[[str], None] = _stderr,
    on_round: Callable[[list[StepReport]], None] | None = None,
    rounds: int | None = None,
    engine: str = "python",
    spark: Any = None,
) -> None:
    """Run `maintain` forever (or `rounds` times), starting a round every `interval_s` seconds."""
    check_engine(engine)

    def one_round() -> None:
        reports = maintain(lh, tables, steps, options=options, progress=progress, engine=engine, spark=spark)
        if on_round:
            on_round(reports)

    every(one_round, interval_s, rounds=rounds, skipped=lambda e: progress(f"round skipped: {e}"))


def every(
    one_round: Callable[[], object],
    interval_s: float,
    *,
    rounds: int | None = None,
    stop: threading.Event | None = None,
    skipped: Callable[[BusyError], None] = lambda _e: None,
) -> None:
    """The one `--every` loop (the API's `run_every` and `icebergdo maintain --every`): a round starts
    every `interval_s` seconds (at once when a round took longer), until `rounds` rounds ran or `stop`
    is set (checked between rounds, and it ends the wait). A round that finds a table's lease taken
    (`BusyError`) is skipped and reported to `skipped`; any other error ends the loop."""
    if interval_s <= 0:
        raise BadInputError("--every: the interval must be positive")
    stop = stop or threading.Event()
    n = 0
    while not stop.is_set() and (rounds is None or n < rounds):
        started = time.monotonic()
        try:
            one_round()
        except BusyError as e:
            skipped(e)
        n += 1
        if rounds is not None and n >= rounds:
            break
        stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
