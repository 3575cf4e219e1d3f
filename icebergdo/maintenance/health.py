"""Is a table due for maintenance, and what would `maintain` do? Answered by `maintain`'s own planner.

`icebergdo health` and `icebergdo maintain --dry-run` must never disagree: a health report that
calls every file "small" while `maintain` plans nothing is noise. So there is one code path: the
driver's `plan()` (every job in dry-run mode, exactly the thresholds `maintain` applies) decides
what is *due*, and each job's report becomes a reason a person can read ("3 partitions with at
least 5 small files: 27 files, 3.4 MiB → 1 file"). A job is *overdue* when it is due and no
maintenance ran on the table for longer than a grace period (`overdue_after`, default 1 day),
counted from the table's first commit when it never ran: `health --check` fails then, so a
scheduler notices a maintainer that stopped running.

Jobs run in order and each sees the previous one's commit, but a dry run changes nothing, so the
driver's plan for `expire` only counts what the snapshot history frees *today*. A real run frees
more: compaction and retention first replace files, and when the snapshot that still references
them is old enough to expire, expiry deletes them in the same run. `plan()` adds that carry-over to
expiry's totals (data files exactly; manifests and manifest lists estimated from the current
snapshot; an upper bound when tags or other branches may keep the old files alive).

`table_health` is the metadata side: snapshots, files, small files, manifests, unreferenced bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyiceberg.manifest import ManifestContent
from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType

from icebergdo.maintenance.common import (
    MAX_SNAPSHOT_AGE_DEFAULT_MS,
    MAX_SNAPSHOT_AGE_PROPERTY,
    MIN_SNAPSHOTS_DEFAULT,
    MIN_SNAPSHOTS_PROPERTY,
    SMALL_FILE_RATIO,
    StepReport,
    table_name,
    table_prefixes,
    target_file_size,
)
from icebergdo.maintenance.reachable import reachable
from icebergdo.store import Store, is_under
from icebergdo.units import format_duration, format_size

if TYPE_CHECKING:
    from icebergdo.maintenance import MaintenanceOptions
    from icebergdo.tables import Tables

OVERDUE_AFTER_DEFAULT_S = 86_400.0
EARLIER_STEPS = ("retention", "compact", "manifests")  # the jobs that run (and commit) before expiry
# Snapshots a run commits before expiry are themselves expired in the same run only when the
# expiry window is shorter than the run (e.g. `--older-than 0s`).
RUN_WINDOW_S = 60.0


@dataclass
class JobStatus:
    """One job on one table: is it due, why, and what it would rewrite or delete."""

    table: str
    job: str
    due: bool
    reason: str
    files: int = 0
    bytes: int = 0
    files_out: int = 0
    overdue: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TableReport:
    """`table_health` plus the planned jobs and whether any is overdue."""

    health: dict[str, Any]
    jobs: list[JobStatus] = field(default_factory=list)
    since_maintenance: float | None = None  # seconds since the last run (or since the first commit, if it never ran)

    @property
    def table(self) -> str:
        return str(self.health["table"])

    @property
    def due(self) -> bool:
        return any(j.due for j in self.jobs)

    @property
    def overdue(self) -> bool:
        return any(j.overdue for j in self.jobs)

    def to_dict(self) -> dict[str, Any]:
        return {**self.health, "due": self.due, "overdue": self.overdue, "since_maintenance_s": self.since_maintenance,
                "jobs": [j.to_dict() for j in self.jobs]}


# -- metadata ------------------------------------------------------------------------------------
def table_health(table: Table, store: Store, other_prefixes: list[str], last_run: tuple[float | None, Any]) -> dict[str, Any]:
    """Snapshots, data files, small files, average size, manifests, unreferenced bytes, last run."""
    snap = table.current_snapshot()
    files = list(table.scan().plan_files()) if snap else []
    sizes = [t.file.file_size_in_bytes for t in files]
    target = target_file_size(table)
    small = int(target * SMALL_FILE_RATIO)
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
        "target_file_bytes": target,
        "avg_file_bytes": int(sum(sizes) / len(sizes)) if sizes else 0,
        "data_bytes": sum(sizes),
        "manifests": sum(1 for m in manifests if m.content == ManifestContent.DATA),
        "delete_manifests": sum(1 for m in manifests if m.content == ManifestContent.DELETES),
        "unreferenced_files": unref_files,
        "unreferenced_bytes": unref_bytes,
        "first_commit": _first_commit(table),
        "last_maintenance": when,
        "last_maintenance_summary": summary,
    }


def _first_commit(table: Table) -> float | None:
    """Epoch seconds of the table's oldest commit still in its metadata log or history."""
    md = table.metadata
    stamps = [s.timestamp_ms for s in md.snapshots] + [e.timestamp_ms for e in md.metadata_log]
    return min(stamps) / 1000 if stamps else None


# -- planning ------------------------------------------------------------------------------------
def _expiry_settings(table: Table, opts: MaintenanceOptions) -> tuple[float, int]:
    props = table.metadata.properties
    older = opts.older_than if opts.older_than is not None else int(props.get(MAX_SNAPSHOT_AGE_PROPERTY, MAX_SNAPSHOT_AGE_DEFAULT_MS)) / 1000
    retain = opts.retain_last if opts.retain_last is not None else int(props.get(MIN_SNAPSHOTS_PROPERTY, MIN_SNAPSHOTS_DEFAULT))
    return float(older), max(1, int(retain))


def carried_by_expiry(table: Table, earlier: list[StepReport], opts: MaintenanceOptions, store: Store, *, now: float | None = None) -> dict[str, Any]:
    """What expiry will free in the same run because the earlier jobs commit first.

    After `k` earlier commits on `main`, the snapshots that were protected only by being among the
    newest `retain_last` (the current one first) lose that protection; those older than the expiry
    cutoff are expired, and with them go the files the earlier jobs replaced: compaction inputs and
    retention drops (exactly), the manifests they rewrote or merged and the snapshots' manifest
    lists (estimated from the current snapshot). Returns {files, bytes, snapshots, upper_bound}.
    """
    from icebergdo.maintenance.expire import snapshots_to_expire

    out: dict[str, Any] = {"files": 0, "bytes": 0, "snapshots": 0, "upper_bound": False}
    commits = [r for r in earlier if r.files_in > 0]
    md = table.metadata
    current = table.current_snapshot()
    if not commits or current is None:
        return out
    older_s, retain = _expiry_settings(table, opts)
    now = time.time() if now is None else now
    cutoff_ms = (now - older_s) * 1000
    already = set(snapshots_to_expire(table, older_than=datetime.fromtimestamp(now - older_s, UTC), retain_last=retain))
    protected = set()
    other_refs = False
    for name, ref in md.refs.items():
        if name == MAIN_BRANCH:
            continue
        other_refs = True
        protected.add(ref.snapshot_id)
        if ref.snapshot_ref_type == SnapshotRefType.BRANCH:  # other branches keep their newest too
            keep, snap = ref.min_snapshots_to_keep or retain, md.snapshot_by_id(ref.snapshot_id)
            while snap is not None and keep > 0:
                protected.add(snap.snapshot_id)
                keep -= 1
                snap = md.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id is not None else None
    keep, snap = retain - len(commits), current
    while snap is not None and keep > 0:  # current ancestors still among the newest `retain`
        protected.add(snap.snapshot_id)
        keep -= 1
        snap = md.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id is not None else None
    newly = [s for s in md.snapshots if s.snapshot_id not in already and s.snapshot_id not in protected and s.timestamp_ms < cutoff_ms]
    intermediates = max(0, len(commits) - retain) if older_s < RUN_WINDOW_S else 0
    if not newly and not intermediates:
        return out
    lists = [s.manifest_list for s in newly if s.manifest_list]
    list_sizes = store.sizes(lists) if lists else {}
    avg_list = int(sum(list_sizes.values()) / len(list_sizes)) if list_sizes else 0
    files = len(lists) + intermediates
    size = sum(list_sizes.values()) + intermediates * avg_list
    if any(s.snapshot_id == current.snapshot_id for s in newly):
        by_step = {r.step: r for r in commits}
        for step in ("retention", "compact"):  # data files the new head no longer references
            if step in by_step:
                files += by_step[step].files_in
                size += by_step[step].bytes_in
        data_manifests = [m for m in current.manifests(table.io) if m.content == ManifestContent.DATA]
        if "manifests" in by_step:  # the small manifests merged away
            files += by_step["manifests"].files_in
            size += by_step["manifests"].bytes_in
        elif "compact" in by_step or "retention" in by_step:  # manifests holding replaced files are rewritten
            files += len(data_manifests)
            size += sum(m.manifest_length for m in data_manifests)
            out["upper_bound"] = True
        if intermediates and "manifests" in by_step:  # what the intermediate commits wrote, merged again by the manifest rewrite
            avg_manifest = int(sum(m.manifest_length for m in data_manifests) / len(data_manifests)) if data_manifests else 0
            written = intermediates  # each commit adds a manifest of its own ...
            if "compact" in by_step:  # ... and compaction rewrites the manifests that held its inputs
                written += min(len(data_manifests), by_step["compact"].files_in)
            files += written
            size += written * avg_manifest
    out.update(files=files, bytes=size, snapshots=len(newly) + intermediates, upper_bound=out["upper_bound"] or other_refs)
    return out


def plan(
    lh: Tables,
    tables: Iterable[str] | None = None,
    steps: Iterable[str] | None = None,
    *,
    options: MaintenanceOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[StepReport]:
    """The driver's dry run (`icebergdo.maintenance.plan`), with expiry's totals including what the
    earlier jobs of the same run free (see `carried_by_expiry`)."""
    from icebergdo.maintenance import MaintenanceOptions
    from icebergdo.maintenance import plan as driver_plan

    opts = options or MaintenanceOptions.from_config(lh.config.section("maintenance"), lh.config.source)
    reports = driver_plan(lh, tables, steps, options=opts, progress=progress)
    store = Store(lh.config)
    for name in dict.fromkeys(r.table for r in reports):
        mine = [r for r in reports if r.table == name]
        expiry = next((r for r in mine if r.step == "expire"), None)
        if expiry is None:
            continue
        carry = carried_by_expiry(lh.table(name), [r for r in mine if r.step in EARLIER_STEPS], opts, store)
        if carry["files"]:
            expiry.files_in += carry["files"]
            expiry.bytes_in += carry["bytes"]
            expiry.details["snapshots_expired"] = expiry.details.get("snapshots_expired", 0) + carry["snapshots"]
            expiry.details["freed_after_earlier_jobs"] = carry
    return reports


def job_status(r: StepReport, opts: MaintenanceOptions) -> JobStatus:
    """A planned job as due / not due, with the reason in words."""
    d = r.details
    due = r.files_in > 0 or (r.step == "expire" and bool(d.get("snapshots_expired")))
    refused = next((n for n in r.notes if n.startswith(("refused", "skipped"))), None)
    what = f"{r.files_in:,} file(s), {format_size(r.bytes_in)}"
    if refused:
        reason = refused
    elif r.step == "retention":
        reason = (f"{d.get('partitions', 0)} partition(s) older than {d.get('cutoff')}: {what}" if due
                  else f"no partition older than {d.get('cutoff')}")
    elif r.step == "compact":
        reason = (f"{d.get('groups', 0)} partition(s) with at least {opts.min_input_files} small files: {what} → {r.files_out} file(s)" if due
                  else f"no partition has {opts.min_input_files} or more files below {SMALL_FILE_RATIO:.0%} of the target size"
                  + (" (or older than rollup_after with 2 or more)" if opts.rollup_after is not None else ""))
    elif r.step == "manifests":
        reason = (f"{r.files_in} small manifests to merge into {r.files_out}" if due
                  else f"{d.get('manifests', 0)} data manifest(s): nothing to merge")
    elif r.step == "expire":
        carry = d.get("freed_after_earlier_jobs")
        extra = (f" (incl. {carry['files']:,} file(s), {format_size(carry['bytes'])} the earlier jobs replace"
                 + (", at most" if carry.get("upper_bound") else "") + ")") if carry else ""
        reason = (f"{d.get('snapshots_expired', 0)} snapshot(s) to expire, frees {what}{extra}" if due
                  else "no snapshot is older than the expiry age beyond the newest ones kept")
    elif r.step == "orphans":
        recent = d.get("too_recent", 0)
        reason = (f"{what} unreferenced and older than {format_duration(opts.orphan_age)}" if due
                  else f"no unreferenced file older than {format_duration(opts.orphan_age)}")
        if recent:
            reason += f" ({recent} newer one(s) kept for now)"
    else:
        reason = what if due else "nothing to do"
    return JobStatus(r.table, r.step, due and not refused, reason, r.files_in, r.bytes_in, r.files_out)


def report(
    lh: Tables,
    tables: Iterable[str] | None = None,
    *,
    options: MaintenanceOptions | None = None,
    overdue_after: float = OVERDUE_AFTER_DEFAULT_S,
    progress: Callable[[str], None] | None = None,
    now: float | None = None,
) -> list[TableReport]:
    """Per table: `table_health` plus every job as due / not due (the planner `maintain` uses), overdue flags."""
    from icebergdo.maintenance import MaintenanceOptions
    from icebergdo.maintenance import health as driver_health
    from icebergdo.maintenance.retention import policies

    opts = options or MaintenanceOptions.from_config(lh.config.section("maintenance"), lh.config.source)
    rows = driver_health(lh, tables)
    names = [r["table"] for r in rows]
    planned = plan(lh, names, options=opts, progress=progress) if names else []
    retention = policies(lh.config)
    now = time.time() if now is None else now
    out = []
    for h in rows:
        name = h["table"]
        since_from = h.get("last_maintenance") or h.get("first_commit")
        since = now - since_from if since_from else None
        jobs = [job_status(r, opts) for r in planned if r.table == name and r.step != "all"]
        if name not in retention:
            jobs.insert(0, JobStatus(name, "retention", False, "no [retention] policy for this table"))
        for j in jobs:
            j.overdue = j.due and since is not None and since > overdue_after
        out.append(TableReport(h, jobs, since))
    return out
