"""`icebergdo maintain` (plan, then run, or on a schedule) and `icebergdo health` (what is due, and why).

Both use the same planner (`icebergdo.maintenance.health.plan`, the driver's dry run plus what
earlier jobs free for expiry), so `health` never calls a table due that `maintain` would leave alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from icebergdo.cli import COMMANDS, args, output
from icebergdo.cli.output import BYTES, NUMBER, SECONDS, TIME, Column
from icebergdo.errors import BadInputError, LockBusyError, OverdueError

STEP_FLAGS = {
    "retention": "drop partitions older than the table's [retention] age",
    "compact": "bin-pack small data files per partition into target-sized, sorted files",
    "manifests": "merge the many small manifests into few",
    "expire": "expire old snapshots and delete the files only they referenced",
    "orphans": "delete unreferenced files older than the safety window under each table's prefixes",
}
REPORT_COLUMNS = [
    Column("table"), Column("step", header="job"), Column("dry_run"),
    Column("files_in", NUMBER, "files"), Column("bytes_in", BYTES, "bytes"),
    Column("files_out", NUMBER, "files out"), Column("bytes_out", BYTES, "bytes out"),
    Column("seconds", SECONDS, "time"), Column("snapshot_id"), Column("notes"),
]
HEALTH_COLUMNS = [
    Column("table"), Column("due"), Column("overdue"), Column("snapshots", NUMBER), Column("data_files", NUMBER, "data files"),
    Column("small_files", NUMBER, "small"), Column("avg_file_bytes", BYTES, "avg size"), Column("target_file_bytes", BYTES, "target"),
    Column("data_bytes", BYTES, "data"), Column("manifests", NUMBER), Column("unreferenced_files", NUMBER, "unref files"),
    Column("unreferenced_bytes", BYTES, "unref bytes"), Column("last_maintenance", TIME, "last maintenance"),
]
JOB_COLUMNS = [Column("table"), Column("job"), Column("due"), Column("overdue"), Column("files", NUMBER), Column("bytes", BYTES), Column("reason")]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "maintain",
        help=COMMANDS["maintain"][1],
        description="Prints a plan (files and bytes per table and job), runs it with a progress bar on a terminal "
        "(one summary line per table otherwise), and prints a summary. All jobs when none is named; all tables when "
        "no --table. One maintainer per table at a time (a lock row in the catalog database); a table skipped "
        "because another maintainer holds it ends the run with exit code 5.",
    )
    p.add_argument("--table", action="append", dest="tables", metavar="T", help="table to maintain (repeatable; default: all)")
    for step, text in STEP_FLAGS.items():
        p.add_argument(f"--{step}", action="store_true", help=text)
    p.add_argument("--dry-run", action="store_true", help="print the plan only; change nothing")
    p.add_argument("--every", metavar="DURATION", type=args.duration(positive=True), help="run forever, one round every DURATION (e.g. 1h, 15m)")
    p.add_argument("--engine", choices=["python", "spark"], default="python", help="python (default) or Spark's Iceberg procedures")
    p.add_argument("--older-than", metavar="DURATION", type=args.duration(), help="expire snapshots older than this (default: history.expire.max-snapshot-age-ms, 5d)")
    p.add_argument("--retain-last", type=args.count(minimum=1), metavar="N", help="always keep the newest N snapshots (default: history.expire.min-snapshots-to-keep, 1)")
    p.add_argument("--orphan-age", metavar="DURATION", type=args.duration(), help="only delete orphans older than this (default 3d; below 1h needs --unsafe-orphan-age)")
    p.add_argument("--unsafe-orphan-age", action="store_true",
                   help="allow --orphan-age below 1h (only when every writer of the table is an icebergdo append; docs/maintenance.md)")
    p.add_argument("--wait", metavar="DURATION", type=args.duration(), help="wait up to DURATION for a table's maintenance lock (default: skip it at once, exit code 5)")
    p.add_argument("--target-file-size", type=args.size(minimum=1), metavar="SIZE", help="compaction target, e.g. 64MiB (default: write.target-file-size-bytes)")
    p.add_argument("--min-input-files", type=args.count(minimum=2), metavar="N", help="compact a partition from N small files (default 5)")
    p.add_argument("--rollup-after", metavar="DURATION", type=args.duration(), help="merge partitions older than this into one file each (default: off)")
    args.add_format(p)
    args.add_quiet(p)
    p.set_defaults(handler=cmd_maintain, no_thp=True)  # see icebergdo/cli/process.py

    p = sub.add_parser(
        "health",
        help=COMMANDS["health"][1],
        description="For every table: snapshots, files, small files, manifests, unreferenced bytes, last maintenance, "
        "and every maintenance job as due / not due with the reason — computed by the planner `maintain` uses. "
        "A job is overdue when it is due and no maintenance ran on the table for longer than --overdue-after.",
    )
    p.add_argument("--table", action="append", dest="tables", metavar="T", help="table to report (repeatable; default: all)")
    p.add_argument("--format", choices=[*args.FORMATS, "prometheus"], default="table",
                   help="table, json, jsonl, csv (one row per table and job in csv/jsonl), or prometheus (node-exporter textfile format)")
    p.add_argument("--json", dest="format", action="store_const", const="json", help="short for --format json")
    p.add_argument("--check", action="store_true", help="exit with code 9 when any job is overdue (for schedulers and monitoring)")
    p.add_argument("--overdue-after", metavar="DURATION", type=args.duration(), default=None,
                   help="a due job is overdue when maintenance has not run for this long (default: [health] overdue_after, else 1d)")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report with charts (needs icebergdo[report])")
    p.add_argument("--commits", type=args.count(minimum=1), default=200, metavar="N", help="commits shown in the HTML report (default 200)")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE atomically (e.g. for the node-exporter textfile collector)")
    args.add_quiet(p)
    p.set_defaults(handler=cmd_health)


def _options(a: argparse.Namespace, ctx: Any) -> Any:
    from icebergdo.maintenance import MaintenanceOptions

    base = MaintenanceOptions.from_config(ctx.config.section("maintenance"), ctx.config.source)
    return base.merged(
        older_than=getattr(a, "older_than", None),
        retain_last=getattr(a, "retain_last", None),
        orphan_age=getattr(a, "orphan_age", None),
        target_file_size=getattr(a, "target_file_size", None),
        min_input_files=getattr(a, "min_input_files", None),
        rollup_after=getattr(a, "rollup_after", None),
        unsafe_orphan_age=True if getattr(a, "unsafe_orphan_age", False) else None,
        lock_wait=getattr(a, "wait", None),
    )


def _notes(r: Any) -> str:
    """The notes column: notes, then the details a person needs (no timings, no paths), short numbers."""
    parts = list(r.notes)
    d = r.details
    if d.get("engine") not in (None, "python"):
        parts.append(f"engine={d['engine']}")
    if r.step == "compact" and d.get("groups"):
        parts.append(f"{d['groups']} partition(s)" + (f", {d['rollup_groups']} rolled up" if d.get("rollup_groups") else ""))
    elif r.step == "expire":
        if d.get("snapshots_expired"):
            parts.append(f"{d['snapshots_expired']} snapshot(s)")
        carry = d.get("freed_after_earlier_jobs")
        if carry:
            from icebergdo.units import format_size

            parts.append(f"incl. {carry['files']} file(s), {format_size(carry['bytes'])} after the earlier jobs" + (" (at most)" if carry.get("upper_bound") else ""))
    elif r.step == "orphans" and d.get("too_recent"):
        parts.append(f"{d['too_recent']} too recent")
    elif r.step == "retention" and d.get("cutoff"):
        parts.append(f"before {d['cutoff']}")
    return "; ".join(parts)


def _rows(reports: list[Any]) -> list[list[Any]]:
    return [[r.table, r.step, r.dry_run, r.files_in, r.bytes_in, r.files_out, None if r.dry_run else r.bytes_out,
             None if r.dry_run else r.seconds, r.snapshot_id, _notes(r)] for r in reports]


def _print_reports(reports: list[Any], fmt: str, title: str | None = None) -> None:
    if fmt == "table":
        if title:
            print(title)
        cols = [c for c in REPORT_COLUMNS if c.name not in ("dry_run", "snapshot_id")]
        cols[2] = Column("files_in", header="files")  # "rewrite 12" / "merge 7" / "delete 54": what happens to them
        keep = [i for i, c in enumerate(REPORT_COLUMNS) if c.name not in ("dry_run", "snapshot_id")]
        rows = [[row[i] for i in keep] for row in _rows(reports)]
        for row, r in zip(rows, reports, strict=True):
            row[2] = f"{ {'compact': 'rewrite', 'manifests': 'merge'}.get(r.step, 'delete')} {r.files_in:,}" if r.files_in else "-"
        output.emit(cols, rows, fmt, empty="nothing to do")
    elif fmt in ("json", "jsonl", "csv"):
        if fmt == "json" or fmt == "jsonl":
            output.emit_dicts(["table", "step", "dry_run", "files_in", "bytes_in", "files_out", "bytes_out", "snapshot_id", "seconds", "notes", "details"],
                              [r.to_dict() for r in reports], fmt)
        else:
            output.emit(REPORT_COLUMNS, _rows(reports), fmt)
    sys.stdout.flush()


def _locked(reports: list[Any]) -> list[str]:
    return [r.table for r in reports if r.step == "all" and any(n.startswith("skipped") for n in r.notes)]


def cmd_maintain(a: argparse.Namespace, ctx: Any) -> int:
    steps = [s for s in STEP_FLAGS if getattr(a, s)]
    from icebergdo.maintenance import maintain
    from icebergdo.maintenance.health import plan

    opts = _options(a, ctx)
    lh = ctx.lh
    if a.every is not None and a.dry_run:
        raise BadInputError("--every and --dry-run do not go together")
    bar = sys.stderr.isatty() and not a.quiet
    show_plan = a.format == "table" and not a.quiet

    def one_round() -> list[Any]:
        from icebergdo.cli.progress import MaintainProgress, log_line, table_summary

        planned = plan(lh, a.tables, steps or None, options=opts, progress=None)
        if show_plan and (a.every is None or bar):
            _print_reports(planned, "table", "plan:")
            if "retention" in (steps or STEP_FLAGS) and not ctx.config.section("retention"):
                print("(no [retention] policies in the config: retention skipped)")
            print()
        if a.dry_run:
            return planned
        started = time.monotonic()
        with MaintainProgress(planned, bar=bar) as progress:
            done = maintain(lh, a.tables, steps or None, options=opts, progress=progress, engine=a.engine)
        if not a.quiet and not bar:
            for name in dict.fromkeys(r.table for r in done):
                log_line(table_summary(name, [r for r in done if r.table == name]))
        title = f"done in {time.monotonic() - started:.1f}s:" if a.every is None else f"round finished {datetime.now(UTC).isoformat(timespec='seconds')}:"
        _print_reports(done, a.format, title)
        return done

    if a.every is not None:
        from icebergdo.maintenance import every

        every(one_round, a.every, stop=_stop_on_interrupt(), skipped=lambda e: print(f"round skipped: {e}", file=sys.stderr))
        raise KeyboardInterrupt  # the signal came while Python could not raise it (see _stop_on_interrupt)
    reports = one_round()
    if a.dry_run:
        if a.format != "table":
            _print_reports(reports, a.format)
        return 0
    locked = _locked(reports)
    if locked:
        raise LockBusyError(f"skipped {', '.join(locked)}: another maintainer holds the lock (the other tables were maintained)")
    return 0


def _stop_on_interrupt() -> threading.Event:
    """SIGINT (Ctrl-C) ends `maintain --every`: it sets the returned flag and interrupts the round.

    The KeyboardInterrupt raised here is what stops a round at once; but a signal that arrives while
    Python runs a garbage-collector callback raises it where it is printed and ignored ("Exception
    ignored in ..."), and the loop would go on forever. The flag cannot be lost: the loop ends after
    the round that was running."""
    import signal

    stop = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handle)
    return stop


# -- health ----------------------------------------------------------------------------------------
def _overdue_after(a: argparse.Namespace, ctx: Any) -> float:
    from icebergdo.maintenance.health import OVERDUE_AFTER_DEFAULT_S
    from icebergdo.units import parse_duration

    if a.overdue_after is not None:
        return float(a.overdue_after)
    section = ctx.config.section("health")
    if "overdue_after" in section:
        return parse_duration(section["overdue_after"], where=f"{ctx.config.source}: [health] overdue_after")
    return OVERDUE_AFTER_DEFAULT_S


def health_rows(reports: list[Any]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in reports]


def _render_health(reports: list[Any], fmt: str, out: Any) -> None:
    if fmt == "prometheus":
        from icebergdo.cli.metrics import render

        out.write(render(reports))
    elif fmt == "json":
        keys = [c.name for c in HEALTH_COLUMNS[:3]] + [c.name for c in HEALTH_COLUMNS[3:]] + ["delete_manifests", "first_commit",
                                                                                        "since_maintenance_s", "last_maintenance_summary", "jobs"]
        output.emit_dicts(keys, health_rows(reports), fmt, out=out)
    elif fmt in ("jsonl", "csv"):  # flat: one row per table and job
        rows = [{**j.to_dict()} for r in reports for j in r.jobs]
        output.emit_dicts(JOB_COLUMNS, rows, fmt, out=out)
    else:
        output.emit_dicts(HEALTH_COLUMNS, health_rows(reports), fmt, out=out, empty="no tables yet", count=False)
        jobs = [{**j.to_dict(), "due": "due" if j.due else "-", "overdue": "OVERDUE" if j.overdue else ""} for r in reports for j in r.jobs]
        if jobs:
            print(file=out)
            output.emit_dicts([JOB_COLUMNS[0], JOB_COLUMNS[1], JOB_COLUMNS[2], JOB_COLUMNS[3], JOB_COLUMNS[6]], jobs, fmt, out=out, count=False)


def _write_atomically(path: str, text: str) -> None:
    """Readers (the node-exporter textfile collector) never see a half-written file."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_health(a: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.maintenance.health import report

    overdue_after = _overdue_after(a, ctx)
    opts = _options(a, ctx)
    reports = report(ctx.lh, a.tables, options=opts, overdue_after=overdue_after)
    if a.output:
        import io

        buf = io.StringIO()
        _render_health(reports, a.format, buf)
        _write_atomically(a.output, buf.getvalue())
    else:
        _render_health(reports, a.format, sys.stdout)
    if a.html:
        from icebergdo.maintenance.report_html import write_report

        write_report(ctx.lh, reports, a.html, commits=a.commits)
        if not a.quiet:
            print(f"HTML report: {Path(a.html).resolve()}", file=sys.stderr)
    if a.check:
        overdue = [f"{r.table} ({', '.join(j.job for j in r.jobs if j.overdue)})" for r in reports if r.overdue]
        if overdue:
            raise OverdueError(f"maintenance overdue (due, and not run for more than {_fmt_duration(overdue_after)}): {'; '.join(overdue)}")
    return 0


def _fmt_duration(s: float) -> str:
    from icebergdo.units import format_duration

    return format_duration(s)
