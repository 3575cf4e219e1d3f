"""`icebergdo maintain` (plan, then run, or on a schedule) and `icebergdo health`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from icebergdo.errors import BadInputError

STEP_FLAGS = {
    "retention": "drop partitions older than the table's [retention] age",
    "compact": "bin-pack small data files per partition into target-sized, sorted files",
    "manifests": "merge the many small manifests into few",
    "expire": "expire old snapshots and delete the files only they referenced",
    "orphans": "delete unreferenced files older than the safety window under each table's prefixes",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "maintain",
        help="table maintenance: retention, compaction, manifest rewrite, snapshot expiry, orphan removal",
        description="Prints a plan (files and bytes per table and job), runs it with progress on stderr, "
        "and prints a summary. All jobs when none is named; all tables when no --table. One maintainer "
        "per table at a time (a lock row in the catalog database).",
    )
    p.add_argument("--table", action="append", dest="tables", metavar="T", help="table to maintain (repeatable; default: all)")
    for step, text in STEP_FLAGS.items():
        p.add_argument(f"--{step}", action="store_true", help=text)
    p.add_argument("--dry-run", action="store_true", help="print the plan only; change nothing")
    p.add_argument("--every", metavar="DURATION", help="run forever, one round every DURATION (e.g. 1h, 15m)")
    p.add_argument("--engine", choices=["python", "spark"], default="python", help="python (default) or Spark's Iceberg procedures")
    p.add_argument("--older-than", metavar="DURATION", help="expire snapshots older than this (default: history.expire.max-snapshot-age-ms, 5d)")
    p.add_argument("--retain-last", type=int, metavar="N", help="always keep the newest N snapshots (default: history.expire.min-snapshots-to-keep, 1)")
    p.add_argument("--orphan-age", metavar="DURATION", help="only delete orphans older than this (default 3d)")
    p.add_argument("--target-file-size", type=int, metavar="BYTES", help="compaction target (default: write.target-file-size-bytes)")
    p.add_argument("--min-input-files", type=int, metavar="N", help="compact a partition from N small files (default 5)")
    p.add_argument("--rollup-after", metavar="DURATION", help="merge partitions older than this into one file each (default: off)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=cmd_maintain)

    p = sub.add_parser("health", help="per-table snapshots, files, small files, manifests, unreferenced bytes, last maintenance")
    p.add_argument("--table", action="append", dest="tables", metavar="T", help="table to report (repeatable; default: all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_health)


def _human(n: float) -> str:
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _options(args: argparse.Namespace, ctx: Any) -> Any:
    from icebergdo.maintenance import MaintenanceOptions
    from icebergdo.maintenance.common import parse_duration

    base = MaintenanceOptions.from_config(ctx.config.section("maintenance"), ctx.config.source)

    def dur(value: str | None, flag: str) -> float | None:
        return parse_duration(value, where=flag) if value is not None else None

    if args.retain_last is not None and args.retain_last < 1:
        raise BadInputError("--retain-last: must be at least 1")
    return base.merged(
        older_than=dur(args.older_than, "--older-than"),
        retain_last=args.retain_last,
        orphan_age=dur(args.orphan_age, "--orphan-age"),
        target_file_size=args.target_file_size,
        min_input_files=args.min_input_files,
        rollup_after=dur(args.rollup_after, "--rollup-after"),
    )


def _print_reports(reports: list[Any], title: str) -> None:
    from icebergdo.cli.core import print_table

    print(title)
    rows = []
    for r in reports:
        what = {"compact": "rewrite", "manifests": "merge"}.get(r.step, "delete")
        rows.append(
            [
                r.table,
                r.step,
                f"{what} {r.files_in}" if r.files_in else "-",
                _human(r.bytes_in) if r.bytes_in else "-",
                r.files_out or "-",
                _human(r.bytes_out) if r.bytes_out else "-",
                f"{r.seconds:.2f}s" if not r.dry_run else "",
                "; ".join(r.notes + [f"{k}={v}" for k, v in r.details.items() if k != "paths"]),
            ]
        )
    print_table(["table", "job", "files", "bytes", "files out", "bytes out", "time", "notes"], rows)


def cmd_maintain(args: argparse.Namespace, ctx: Any) -> int:
    steps = [s for s in STEP_FLAGS if getattr(args, s)]
    from icebergdo.maintenance import maintain, plan, run_every
    from icebergdo.maintenance.common import parse_duration

    opts = _options(args, ctx)
    lh = ctx.lh
    if args.every:
        interval = parse_duration(args.every, where="--every")
        if args.dry_run:
            raise BadInputError("--every and --dry-run do not go together")

        def on_round(reports: list[Any]) -> None:
            _print_reports(reports, f"round finished {datetime.now(UTC).isoformat(timespec='seconds')}")
            sys.stdout.flush()

        run_every(lh, interval, args.tables, steps or None, options=opts, on_round=on_round, engine=args.engine)
        return 0
    planned = plan(lh, args.tables, steps or None, options=opts, progress=None)
    if not args.json:
        _print_reports(planned, "plan:")
        if "retention" in (steps or STEP_FLAGS) and not ctx.config.section("retention"):
            print("(no [retention] policies in the config: retention skipped)")
    if args.dry_run:
        if args.json:
            print(json.dumps([r.to_dict() for r in planned], indent=2, default=str))
        return 0
    started = time.monotonic()
    done = maintain(lh, args.tables, steps or None, options=opts, engine=args.engine)
    if args.json:
        print(json.dumps([r.to_dict() for r in done], indent=2, default=str))
    else:
        print()
        _print_reports(done, f"done in {time.monotonic() - started:.1f}s:")
    return 0


def cmd_health(args: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.cli.core import print_table
    from icebergdo.maintenance import health

    rows = health(ctx.lh, args.tables)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    out = []
    for h in rows:
        last = h["last_maintenance"]
        out.append(
            [
                h["table"],
                h["snapshots"],
                h["data_files"],
                h["small_files"],
                _human(h["avg_file_bytes"]),
                h["manifests"],
                f"{h['unreferenced_files']} / {_human(h['unreferenced_bytes'])}",
                datetime.fromtimestamp(last, UTC).isoformat(timespec="seconds") if last else "never",
            ]
        )
    print_table(["table", "snapshots", "data files", "small", "avg size", "manifests", "unreferenced", "last maintenance"], out)
    return 0
