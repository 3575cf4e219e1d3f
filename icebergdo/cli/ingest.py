"""`icebergdo ingest`: JSON-lines events from files or stdin, streamed, validated, committed exactly once.

How a file (or a finite stdin) is ingested, and why:

1. **Validate everything first, in bounded memory.** The input is read in chunks of `--chunk-bytes` (8 MiB)
   (`icebergdo.jsonl`), each chunk validated column-wise (`schema.events_from_json_lines`) and
   spilled to an anonymous temporary file as compressed Arrow. A bad line fails the run before the
   first commit (`--on-error fail`, the default) with its line number and field; memory holds one
   chunk and one commit batch, never the file.
2. **Commit batches with ids derived from the input.** The validated chunks are grouped into commit
   batches (`--max-rows` / `--max-bytes`, 64 MiB of Arrow), cut at chunk boundaries, so the same input is always cut
   the same way. Batch k's id is `ingest:<BLAKE2b of the input up to the end of batch k>` (or
   `--batch-id ID`, `ID:k`), and ids for events without one are derived from the chunk's content
   hash and position (`icebergdo.ids`). Each batch is one idempotent `Tables.append`, as batch k of
   a writer whose id is derived from all the batch ids (`_writer_id`).
3. **A killed run is completed by running the same command again**: the input is re-read, the batch
   ids and the writer id come out the same, batches already committed are recognised by the
   exactly-once ledger (`icebergdo.ledger`: a table property, kept whatever snapshot expiry does;
   entries silent for 30 days are pruned) and skipped, the rest commit. Nothing is committed twice,
   and re-read events keep the ids they got the first time. Re-run with the same flags: other
   `--max-rows`/`--max-bytes` cut the input differently (docs/writer.md).

`--stream` is for endless stdin: chunks are validated and handed to the buffered, durable writer as
they arrive (bad lines after a commit cannot undo it; a crash is recovered from the writer's WAL).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from icebergdo.cli import args as flags
from icebergdo.errors import BadInputError, IcebergdoError

if TYPE_CHECKING:  # the heavy modules (pyarrow, duckdb, pyiceberg) load when a command runs, not for --help
    import pyarrow as pa

    from icebergdo.jsonl import Chunk, JsonLines
    from icebergdo.times import TimeRule

EVENTS_TABLE = "events.raw"  # EVENTS_TABLE, without importing the layout for --help
TS_UNITS = ("auto", "s", "ms", "us", "ns")  # icebergdo.times.TS_UNITS
# File and --stream mode: a commit batch of 64 MiB of Arrow and 8 MiB input chunks keep an ingest of any size near
# 500 MB peak RSS (160 MB of it is the interpreter and libraries; see cli/process.py); the
# writer's 128 MiB would need ~700 MB, 32 MiB ~400 MB for twice the commits.
BATCH_BYTES = 64 * 1024 * 1024
CHUNK_BYTES = 8 * 1024 * 1024
MAX_REPORTED_BAD = 20
PROGRESS_EVERY_S = 5.0  # plain progress lines when stderr is not a terminal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="append JSON-lines events (files or '-' for stdin; plain, .gz or .zst), exactly once per input",
        description="One JSON object per line: ts (ISO-8601 or an epoch number), type, source, payload (any JSON), "
        "optional id, namespace, collection. The input is validated before the first commit; a bad line "
        "fails the whole run with its line number and field unless --on-error skip. Re-running the same "
        "command after a crash or kill commits only what is missing (batch ids derive from the input).",
    )
    p.add_argument("inputs", nargs="+", metavar="FILE", help="JSON-lines file(s), plain, gzip or zstd; '-' reads stdin")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="fail: commit nothing if any line is bad (default); skip: drop bad lines and report them")
    p.add_argument("--unknown", choices=("error", "payload", "keep"), default="error",
                   help="top-level fields without a column: error (default), fold into payload, "
                   "or keep as new columns (evolves the table schema)")
    p.add_argument("--ts-unit", choices=TS_UNITS, default="auto",
                   help="unit of numeric ts values: s, ms, us, ns, or auto by magnitude (default)")
    p.add_argument("--ts-after", default="2000-01-01", metavar="TIME",
                   help="refuse events before this time (default %(default)s; 'none' to allow any)")
    p.add_argument("--ts-ahead", default="1d", metavar="DURATION",
                   help="refuse events more than this far in the future (default %(default)s; 'none' to allow any)")
    p.add_argument("--batch-id", metavar="ID", default=None,
                   help="commit batch ids ID, ID:1, ID:2, ... instead of ids derived from the input's content")
    p.add_argument("--stream", action="store_true",
                   help="commit while reading, through the buffered durable writer (for endless stdin)")
    p.add_argument("--max-rows", type=int, default=None, help="events per commit (default: the writer's, 1000000)")
    p.add_argument("--max-bytes", type=flags.size(minimum=1), default=None,
                   help="Arrow bytes per commit (default: 64 MiB, which keeps peak memory near 500 MB)")
    p.add_argument("--chunk-bytes", type=flags.size(minimum=1), default=CHUNK_BYTES,
                   help="input bytes read and validated at once, e.g. 8MiB; bounds memory (default: 8 MiB)")
    p.add_argument("--max-age", type=flags.duration(positive=True), default=None,
                   help="--stream: commit when the oldest buffered event is this many seconds old (default: the writer's, 5)")
    p.add_argument("--wal", metavar="DIR", help="--stream: write-ahead log folder (default: <home>/wal/events.raw)")
    p.add_argument("--no-wal", action="store_true", help="--stream: no write-ahead log (a crash loses buffered events)")
    progress = p.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="show progress on stderr")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    flags.add_format(p)
    p.set_defaults(handler=run, return_freed_memory=True)  # bounded RSS: see icebergdo/cli/process.py


@dataclass
class _Report:
    lines: int = 0
    events: int = 0
    bad: list[str] = field(default_factory=list)
    bad_count: int = 0
    commits: int = 0
    files: int = 0
    already: int = 0
    batches: int = 0

    def reject(self, message: str) -> None:
        self.bad_count += 1
        if len(self.bad) < MAX_REPORTED_BAD:
            self.bad.append(message)


def time_rule(args: argparse.Namespace) -> TimeRule:
    from icebergdo.times import TimeRule, parse_duration, parse_ts

    after = None if str(args.ts_after).lower() == "none" else parse_ts(args.ts_after, "--ts-after")
    ahead = None if str(args.ts_ahead).lower() == "none" else parse_duration(args.ts_ahead, "--ts-ahead")
    return TimeRule(unit=args.ts_unit, earliest=after, ahead=ahead)


# -- progress -----------------------------------------------------------------------------------
class _Progress:
    """A rich progress bar on a terminal (bytes, rate, ETA); otherwise a plain line every few seconds."""

    def __init__(self, enabled: bool | None) -> None:
        tty = sys.stderr.isatty()
        self.enabled = tty if enabled is None else enabled
        self.bar: Any = None
        self.task: Any = None
        self._last = time.monotonic()
        self.started = self._last
        if self.enabled and tty:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=Console(stderr=True), transient=False)
            self.bar.start()

    def start(self, what: str, total: int | None) -> None:
        if self.bar is not None:
            self.task = self.bar.add_task(what, total=total, status="")

    def update(self, done: int, status: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=done, status=status)
            return
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            print(f"ingest: {done / 1e6:,.1f} MB read, {status} ({now - self.started:,.0f}s)", file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# -- validation ---------------------------------------------------------------------------------
def _validate(chunk: Chunk, label: str, args: argparse.Namespace, rule: TimeRule, report: _Report, now: datetime) -> pa.Table:
    from icebergdo.jsonl import where
    from icebergdo.schema import events_from_json_lines

    numbers = chunk.numbers

    def name(i: int) -> str:
        return where(label, int(numbers[i].as_py()))

    problems: list[tuple[int, str]] = []
    seed = f"{chunk.digest}:{chunk.index}".encode()
    table = events_from_json_lines(chunk.lines, name, unknown=args.unknown, now=now, rule=rule, seed=seed,
                                   skip=args.on_error == "skip", problems=problems)
    for _, message in problems:
        report.reject(message)
    report.lines += len(chunk.lines)
    return table


def _open(name: str) -> JsonLines:
    from icebergdo.jsonl import JsonLines

    return JsonLines(name)


# -- file (and finite stdin) mode: validate + spill, then idempotent commits --------------------------
@dataclass
class _Spilled:
    offset: int
    rows: int


@dataclass
class _Batch:
    batch_id: str
    chunks: list[_Spilled] = field(default_factory=list)
    rows: int = 0
    nbytes: int = 0


def _spill(tmp: IO[bytes], table: pa.Table) -> _Spilled:
    import pyarrow as pa

    offset = tmp.tell()
    sink = pa.PythonFile(tmp, mode="w")
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as w:
        w.write_table(table)
    return _Spilled(offset, table.num_rows)


def _unspill(tmp: IO[bytes], part: _Spilled) -> pa.Table:
    import pyarrow as pa

    tmp.seek(part.offset)
    return pa.ipc.open_stream(pa.PythonFile(tmp, mode="r")).read_all()


def _plan(name: str, tmp: IO[bytes], args: argparse.Namespace, rule: TimeRule, report: _Report,
          progress: _Progress, now: datetime, counter: list[int]) -> Iterator[_Batch]:
    """Phase 1 for one input: validate every chunk, spill it, group chunks into batches with derived ids."""
    batch = _Batch("")
    digest = ""
    with _open(name) as src:
        progress.start(f"validating {src.label}", src.size)
        for chunk in src.chunks(args.chunk_bytes):
            table = _validate(chunk, src.label, args, rule, report, now)
            digest = chunk.digest
            if table.num_rows:
                batch.chunks.append(_spill(tmp, table))
                batch.rows += table.num_rows
                batch.nbytes += table.nbytes
            progress.update(src.consumed(), f"{report.lines:,} lines")
            if batch.rows >= args.max_rows or batch.nbytes >= args.max_bytes:
                batch.batch_id = _batch_id(args.batch_id, digest, counter)
                yield batch
                batch = _Batch("")
        if batch.rows:
            batch.batch_id = _batch_id(args.batch_id, digest, counter)
            yield batch


def _batch_id(given: str | None, digest: str, counter: list[int]) -> str:
    """`ingest:<content hash up to the batch's end>`, or the given id (`ID`, `ID:1`, ... across all inputs)."""
    k = counter[0]
    counter[0] += 1
    if given:
        return given if k == 0 else f"{given}:{k}"
    return f"ingest:{digest}"


def _writer_id(plans: list[_Batch]) -> str:
    """The ledger key of this ingest: a ULID derived from every batch id, i.e. from the content of the
    inputs and how they were cut. A re-run of the same inputs with the same flags is the same writer
    with the same batch numbers, so the exactly-once ledger (`icebergdo.ledger`) skips what landed,
    however much snapshot history was expired since."""
    import hashlib

    from ulid import ULID

    digest = hashlib.blake2b("\n".join(b.batch_id for b in plans).encode(), digest_size=16).digest()
    return str(ULID.from_bytes(digest))


def _ingest_inputs(args: argparse.Namespace, ctx: Any, rule: TimeRule, report: _Report, progress: _Progress) -> None:
    import pyarrow as pa

    now = datetime.now(UTC)
    with tempfile.TemporaryFile(prefix="icebergdo-ingest-") as tmp:
        plans: list[_Batch] = []
        counter = [0]
        for name in args.inputs:
            plans.extend(_plan(name, tmp, args, rule, report, progress, now, counter))
        if report.bad_count and args.on_error != "skip":  # pragma: no cover - fail mode raises in _validate
            return
        progress.start("committing", sum(b.nbytes for b in plans))  # Arrow bytes
        done = 0
        writer_id = _writer_id(plans)
        for seq, batch in enumerate(plans, 1):
            parts = [_unspill(tmp, part) for part in batch.chunks]
            data = parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="default")
            if args.unknown == "keep":
                ctx.lh.add_columns(EVENTS_TABLE, data.schema)  # --unknown keep: new top-level fields become columns
            result = ctx.lh.append(EVENTS_TABLE, data, sort_by="ts", batch_id=batch.batch_id, writer_id=writer_id, writer_seq=seq)
            report.batches += 1
            report.events += data.num_rows
            if result.already_committed:
                report.already += 1
            else:
                report.commits += 1
                report.files += result.files
            done += batch.nbytes
            progress.update(done, f"{report.events:,} events, {report.commits} commit(s)")
            del parts, data, result


# -- stream mode: the buffered durable writer ---------------------------------------------------
def _stream(args: argparse.Namespace, ctx: Any, rule: TimeRule, report: _Report, progress: _Progress) -> Any:
    options: dict[str, Any] = dict(max_rows=args.max_rows, max_bytes=args.max_bytes, max_age=args.max_age, unknown=args.unknown)
    if args.no_wal:
        options["durable"] = False
    else:
        options.update(durable=True, wal_dir=args.wal)
    writer = ctx.lh.writer(EVENTS_TABLE, **options)
    try:
        for name in args.inputs:
            with _open(name) as src:
                progress.start(f"ingesting {src.label}", src.size)
                for chunk in src.chunks(args.chunk_bytes, eager=True):
                    table = _validate(chunk, src.label, args, rule, report, datetime.now(UTC))
                    if table.num_rows:
                        writer.extend(table)
                    st = writer.stats()
                    progress.update(src.consumed(), f"{st.flushed:,} committed")
    finally:
        writer.close()  # commits what was accepted; raises if it could not
    st = writer.stats()
    report.events, report.commits, report.files = st.flushed, st.commits, st.files
    return st


def run(args: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.writer import DEFAULT_MAX_AGE, DEFAULT_MAX_ROWS

    args.max_rows = DEFAULT_MAX_ROWS if args.max_rows is None else args.max_rows
    if args.max_bytes is None:
        args.max_bytes = BATCH_BYTES  # file and --stream mode alike: bounded RSS (see BATCH_BYTES)
    args.max_age = DEFAULT_MAX_AGE if args.max_age is None else args.max_age
    if args.max_rows < 1 or args.max_bytes < 1 or args.chunk_bytes < 1:
        raise IcebergdoError("--max-rows, --max-bytes and --chunk-bytes must be positive")
    if args.inputs.count("-") > 1:
        raise IcebergdoError("stdin ('-') can be given only once")
    rule = time_rule(args)
    report = _Report()
    progress = _Progress(args.progress)
    started = time.monotonic()
    replayed = 0
    try:
        if args.stream:
            replayed = _stream(args, ctx, rule, report, progress).replayed_batches
        else:
            _ingest_inputs(args, ctx, rule, report, progress)
    finally:
        progress.stop()
    took = time.monotonic() - started
    result = {
        "table": EVENTS_TABLE,
        "lines": report.lines,
        "events": report.events,
        "commits": report.commits,
        "data_files": report.files,
        "already_committed_batches": report.already,
        "replayed_batches": replayed,
        "skipped_lines": report.bad_count,
        "seconds": round(took, 3),
    }
    from icebergdo.cli import output

    output.emit_record(result, args.format, f"ingested {report.events:,} events into {EVENTS_TABLE} in {took:.2f}s: "
                       f"{report.commits} commit(s), {report.files} data file(s)"
                       + (f", {report.already} batch(es) already committed by an earlier run" if report.already else "")
                       + (f", {replayed} batch(es) replayed from the WAL" if replayed else ""))
    if report.bad_count:
        print(f"skipped {report.bad_count} bad line(s):", file=sys.stderr)
        for msg in report.bad:
            print(f"  {msg}", file=sys.stderr)
        if report.bad_count > len(report.bad):
            print(f"  ... and {report.bad_count - len(report.bad)} more", file=sys.stderr)
        if not report.events:  # --on-error skip dropped every line: nothing landed, which a script must see
            print("icebergdo: error: every line was skipped; nothing was ingested", file=sys.stderr)
            return BadInputError.exit_code
    return 0

