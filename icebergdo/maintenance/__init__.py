"""Table maintenance: retention, compaction, manifest rewrite, snapshot expiry, orphan removal.

One job per module; `maintain()` runs them per table, in that order, under a per-table lock in
the catalog database, and returns one `StepReport` per (table, job). `plan()` is the same with
`dry_run=True` and no lock. Defaults follow Apache Iceberg's actions; `[maintenance]` in the
config overrides them, `[retention]` holds per-table ages.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from icebergdo.errors import BadInputError, ConfigError
from icebergdo.maintenance.common import (
    MIN_INPUT_FILES_DEFAULT,
    ORPHAN_AGE_DEFAULT_S,
    StepReport,
    parse_duration,
    table_prefixes,
)
from icebergdo.maintenance.compact import compact
from icebergdo.maintenance.expire import expire
from icebergdo.maintenance.health import table_health
from icebergdo.maintenance.lock import DEFAULT_TTL_S, Lease, LockBusyError, last_run_of, table_lock
from icebergdo.maintenance.manifests import rewrite_manifests
from icebergdo.maintenance.orphans import UnsafePrefixError, remove_orphans
from icebergdo.maintenance.retention import apply_retention, is_cdc_state, policies
from icebergdo.store import Store
from icebergdo.tables import Tables

log = logging.getLogger(__name__)
STEPS = ("retention", "compact", "manifests", "expire", "orphans")

__all__ = ["STEPS", "MaintenanceOptions", "StepReport", "health", "maintain", "plan", "run_every"]


@dataclass(frozen=True)
class MaintenanceOptions:
    """Knobs for every job; None means "the table property / Iceberg default"."""

    older_than: float | None = None  # expire snapshots older than this many seconds
    retain_last: int | None = None
    orphan_age: float = ORPHAN_AGE_DEFAULT_S
    target_file_size: int | None = None
    min_input_files: int = MIN_INPUT_FILES_DEFAULT
    rollup_after: float | None = None  # partitions older than this are merged whole
    lock_ttl: float = DEFAULT_TTL_S

    @classmethod
    def from_config(cls, section: dict[str, Any], source: str = "config") -> MaintenanceOptions:
        """`[maintenance]`: older_than, retain_last, orphan_age, target_file_size, min_input_files, rollup_after.

        The Spark engine's keys `snapshot_max_age_hours` and `orphan_min_age_hours` are read too,
        so one config drives both engines.
        """
        known = {"older_than", "retain_last", "orphan_age", "target_file_size", "min_input_files", "rollup_after", "lock_ttl"}
        aliases = {"snapshot_max_age_hours": "older_than", "orphan_min_age_hours": "orphan_age"}
        unknown = set(section) - known - set(aliases)
        if unknown:
            log.warning("%s: [maintenance] keys not used by the python engine: %s", source, ", ".join(sorted(unknown)))
        kw: dict[str, Any] = {}
        for alias, key in aliases.items():
            if alias in section and key not in section:
                kw[key] = parse_duration(f"{section[alias]}h", where=f"{source}: [maintenance] {alias}")
        for key in ("older_than", "orphan_age", "rollup_after", "lock_ttl"):
            if key in section:
                kw[key] = parse_duration(section[key], where=f"{source}: [maintenance] {key}")
        for key in ("retain_last", "target_file_size", "min_input_files"):
            if key in section:
                try:
                    kw[key] = int(section[key])
                except (TypeError, ValueError):
                    raise ConfigError(f"{source}: [maintenance] {key}: expected an integer, got {section[key]!r}") from None
        return cls(**kw)

    def merged(self, **overrides: Any) -> MaintenanceOptions:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_steps(steps: Iterable[str] | None) -> list[str]:
    chosen = list(steps) if steps else list(STEPS)
    bad = [s for s in chosen if s not in STEPS]
    if bad:
        raise BadInputError(f"unknown maintenance step(s) {', '.join(bad)} (choose from {', '.join(STEPS)})")
    return [s for s in STEPS if s in chosen]


def _run_table(
    lh: Tables,
    name: str,
    steps: list[str],
    opts: MaintenanceOptions,
    *,
    dry_run: bool,
    store: Store,
    retention: dict[str, float],
    all_prefixes: dict[str, list[str]],
    progress: Callable[[str], None],
    lock: Lease | None,
) -> list[StepReport]:
    reports = []
    for step in steps:
        table = lh.table(name)  # fresh metadata for every job
        if lock is not None:
            lock.refresh()
        progress(f"{name}: {step}{' (dry run)' if dry_run else ''}")
        if step == "retention":
            if name not in retention:
                continue
            r = apply_retention(table, max_age=retention[name], warehouse=lh.config.warehouse, dry_run=dry_run, progress=progress)
        elif step == "compact":
            r = compact(
                table,
                store=store,
                dry_run=dry_run,
                target_size=opts.target_file_size,
                min_input_files=opts.min_input_files,
                rollup_after=opts.rollup_after,
                progress=progress,
                reload=lambda: lh.table(name),
            )
        elif step == "manifests":
            r = rewrite_manifests(table, dry_run=dry_run, progress=progress)
        elif step == "expire":
            older = datetime.now(UTC) - timedelta(seconds=opts.older_than) if opts.older_than is not None else None
            r = expire(table, store=store, dry_run=dry_run, older_than=older, retain_last=opts.retain_last, progress=progress)
        else:
            others = [p for n, ps in all_prefixes.items() if n != name for p in ps]
            try:
                r = remove_orphans(
                    table,
                    store=store,
                    warehouse=lh.config.warehouse,
                    other_prefixes=others,
                    older_than_s=opts.orphan_age,
                    dry_run=dry_run,
                    progress=progress,
                )
            except UnsafePrefixError as e:  # refuse this table, keep maintaining the others
                r = StepReport(name, step, dry_run, notes=[f"refused: {e}"])
                progress(f"{name}: orphan removal refused: {e}")
        reports.append(r)
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
) -> list[StepReport]:
    """Run the chosen jobs on each table (all tables, all jobs by default), one table at a time.

    A table whose lock another maintainer holds is skipped with a note, not waited for.
    """
    if engine != "python":
        raise BadInputError(f"unknown maintenance engine {engine!r}")
    progress = progress or (lambda _m: None)
    chosen = _check_steps(steps)
    opts = options or MaintenanceOptions.from_config(lh.config.section("maintenance"), lh.config.source)
    retention = policies(lh.config)
    names = list(tables) if tables else lh.tables()
    known = set(lh.tables())
    for n in names:
        if n not in known:
            lh.table(n)  # raises a clear "no table" error
    for n in retention:
        if n not in known:
            raise ConfigError(f"{lh.config.source}: [retention] names table {n!r}, which does not exist")
    if "retention" in chosen:  # refuse a bad policy before any table is touched
        for n in names:
            if n in retention and is_cdc_state(lh.table(n), lh.config.warehouse):
                raise BadInputError(f"{n}: refusing a retention policy on a CDC current-state table (its rows are never aged out)")
    store = Store(lh.config)
    all_prefixes = {n: table_prefixes(lh.table(n)).all() for n in sorted(known)} if "orphans" in chosen else {}
    reports: list[StepReport] = []
    for name in names:
        kwargs = {"dry_run": dry_run, "store": store, "retention": retention, "all_prefixes": all_prefixes, "progress": progress}
        if dry_run or not lock:
            reports += _run_table(lh, name, chosen, opts, lock=None, **kwargs)
            continue
        tl = table_lock(lh, name, ttl=opts.lock_ttl)
        if not tl.acquire():
            reports.append(StepReport(name, "all", dry_run, notes=["skipped: another maintainer holds the lock"]))
            progress(f"{name}: skipped, locked by another maintainer")
            continue
        done: list[StepReport] = []
        try:
            done = _run_table(lh, name, chosen, opts, lock=tl, **kwargs)
        finally:
            tl.release(summary={"steps": [r.to_dict() for r in done]} if done else None)
        reports += done
    return reports


def plan(lh: Tables, tables: Iterable[str] | None = None, steps: Iterable[str] | None = None, **kw: Any) -> list[StepReport]:
    """What `maintain` would do: files and bytes per table and job; changes nothing."""
    return maintain(lh, tables, steps, dry_run=True, lock=False, **kw)


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
) -> None:
    """Run `maintain` forever (or `rounds` times), starting a round every `interval_s` seconds."""
    if interval_s <= 0:
        raise BadInputError("--every: the interval must be positive")
    n = 0
    while rounds is None or n < rounds:
        started = time.monotonic()
        try:
            reports = maintain(lh, tables, steps, options=options, progress=progress)
            if on_round:
                on_round(reports)
        except LockBusyError as e:
            progress(f"round skipped: {e}")
        n += 1
        if rounds is not None and n >= rounds:
            break
        time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
