"""`icebergdo ingest`: JSON-lines events from files or stdin, through the buffered writer.

By default the whole input is read and validated before the first commit, so a bad line 5000
commits nothing; `--on-error skip` drops bad lines (and reports them) instead, and `--stream`
commits stdin as it arrives (for endless pipes). The writer is durable by default (a WAL under
the lakehouse home), so an interrupted ingest is completed by the next one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import pyarrow as pa

from icebergdo import layout
from icebergdo.errors import BadInputError, IcebergdoError
from icebergdo.schema import events_from_rows
from icebergdo.writer import DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS

DEFAULT_CHUNK = 10_000
MAX_REPORTED_BAD = 20


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="append JSON-lines events (files or '-' for stdin) through the buffered, durable writer",
        description="One JSON object per line: ts (ISO-8601 or epoch ms), type, source, payload (any JSON), "
        "optional id, namespace, collection. The input is validated before the first commit; a bad line "
        "fails the whole run with its line number and field unless --on-error skip.",
    )
    p.add_argument("inputs", nargs="+", metavar="FILE", help="JSON-lines file(s); '-' reads stdin")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="fail: commit nothing if any line is bad (default); skip: drop bad lines and report them")
    p.add_argument("--unknown", choices=("error", "payload", "keep"), default="error",
                   help="top-level fields without a column: error (default), fold into payload, "
                   "or keep as new columns (evolves the table schema)")
    p.add_argument("--stream", action="store_true",
                   help="commit while reading instead of validating the whole input first (for endless stdin)")
    p.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="flush after this many events (default: %(default)s)")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="flush after this many buffered bytes (default: 128 MiB)")
    p.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE, help="flush when the oldest buffered event is this many seconds old (default: %(default)s)")
    p.add_argument("--wal", metavar="DIR", help="write-ahead log folder (default: <home>/wal/events.raw)")
    p.add_argument("--no-wal", action="store_true", help="do not keep a write-ahead log (faster; a crash loses buffered events)")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="lines validated and handed to the writer at once (default: %(default)s)")
    progress = p.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress line on stderr")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress line")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


@dataclass
class _Report:
    lines: int = 0
    bad: list[str] = field(default_factory=list)
    bad_count: int = 0

    def reject(self, message: str) -> None:
        self.bad_count += 1
        if len(self.bad) < MAX_REPORTED_BAD:
            self.bad.append(message)


def _open(name: str) -> tuple[str, IO[str]]:
    if name == "-":
        return "stdin", sys.stdin
    try:
        return name, open(name, encoding="utf-8")  # noqa: SIM115 - closed by the caller
    except OSError as e:
        raise IcebergdoError(f"cannot read {name}: {e.strerror}") from None


def _chunks(inputs: list[str], args: argparse.Namespace, report: _Report) -> Iterator[pa.Table]:
    """Validated Arrow batches of at most `--chunk` lines; bad lines raise (fail) or are reported (skip)."""
    skip = args.on_error == "skip"
    for name in inputs:
        label, fh = _open(name)
        rows: list[Any] = []
        labels: list[str] = []
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                report.lines += 1
                where = f"{label}: line {n}"
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    msg = f"{where}: invalid JSON ({e.msg} at column {e.colno})"
                    if not skip:
                        raise BadInputError(msg) from None
                    report.reject(msg)
                    continue
                labels.append(where)
                if len(rows) >= args.chunk:
                    yield _validate(rows, labels, args, report)
                    rows, labels = [], []
            if rows:
                yield _validate(rows, labels, args, report)
        except UnicodeDecodeError as e:
            raise BadInputError(f"{label}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        finally:
            if fh is not sys.stdin:
                fh.close()


def _validate(rows: list[Any], labels: list[str], args: argparse.Namespace, report: _Report) -> pa.Table:
    try:
        return events_from_rows(rows, labels=labels, unknown=args.unknown)
    except BadInputError:
        if args.on_error != "skip":
            raise
    good_rows, good_labels = [], []
    for row, where in zip(rows, labels, strict=False):  # slow path, only for a chunk that has a bad line
        try:
            events_from_rows([row], labels=[where], unknown=args.unknown)
        except BadInputError as e:
            report.reject(str(e))
            continue
        good_rows.append(row)
        good_labels.append(where)
    return events_from_rows(good_rows, labels=good_labels, unknown=args.unknown)


class _Progress:
    """A plain `\\r` status line on stderr, only when it is a terminal (or --progress)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.monotonic()
        self._last = 0.0

    def show(self, read: int, writer: Any, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.25):
            return
        self._last = now
        st = writer.stats() if writer is not None else None
        rate = read / max(now - self.started, 1e-9)
        text = f"ingest: {read:,} lines read"
        if st is not None:
            text += f" · {st.accepted:,} accepted · {st.flushed:,} committed in {st.commits} commit(s)"
        sys.stderr.write(f"\r{text} · {rate:,.0f} lines/s ")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run(args: argparse.Namespace, ctx: Any) -> int:
    if args.chunk < 1 or args.max_rows < 1:
        raise IcebergdoError("--chunk and --max-rows must be positive")
    if args.inputs.count("-") > 1:
        raise IcebergdoError("stdin ('-') can be given only once")
    report = _Report()
    progress = _Progress(sys.stderr.isatty() if args.progress is None else args.progress)
    started = time.monotonic()
    chunks = _chunks(args.inputs, args, report)
    if not args.stream:
        chunks = iter(list(chunks))  # validate everything before the first commit
    options: dict[str, Any] = dict(max_rows=args.max_rows, max_bytes=args.max_bytes, max_age=args.max_age, unknown=args.unknown)
    if args.no_wal:
        options["durable"] = False
    else:
        options.update(durable=True, wal_dir=args.wal)
    writer = ctx.lh.writer(layout.EVENTS_TABLE, **options)
    try:
        for table in chunks:
            if table.num_rows:
                writer.extend(table)
            progress.show(report.lines, writer)
    finally:
        writer.close()  # commits what was accepted; raises if it could not
        progress.show(report.lines, writer, force=True)
        progress.done()
    st = writer.stats()
    took = time.monotonic() - started
    result = {
        "table": layout.EVENTS_TABLE,
        "lines": report.lines,
        "events": st.flushed,
        "commits": st.commits,
        "data_files": st.files,
        "replayed_batches": st.replayed_batches,
        "skipped_lines": report.bad_count,
        "seconds": round(took, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"ingested {st.flushed:,} events into {layout.EVENTS_TABLE} in {took:.2f}s: "
              f"{st.commits} commit(s), {st.files} data file(s)"
              + (f", {st.replayed_batches} batch(es) replayed from the WAL" if st.replayed_batches else ""))
    if report.bad_count:
        print(f"skipped {report.bad_count} bad line(s):", file=sys.stderr)
        for msg in report.bad:
            print(f"  {msg}", file=sys.stderr)
        if report.bad_count > len(report.bad):
            print(f"  ... and {report.bad_count - len(report.bad)} more", file=sys.stderr)
    return 0
