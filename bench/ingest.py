"""Ingest throughput: `lh.append_events` and the buffered writer next to raw Parquet, in one run.

    python bench/ingest.py                       # 100k events, 5 interleaved repeats (median)
    python bench/ingest.py --events 1000000      # the full size from the issue

Two input shapes, each written by every variant to a fresh embedded lakehouse (local folder +
SQLite) at default settings, timed from the first call until everything is committed:

- **realistic** (issue 11): no `id` column (ids are generated), event times spread over 6 hours and
  up to 20 minutes late / out of order, JSON payloads of a few hundred bytes;
- **ordered, with ids**: the shape the first wave was built for (caller ids, times in order).

"raw" is `pyarrow.parquet.write_table` of the already-validated rows of that shape to one zstd file
(no validation, no sorting, no partitioning, no catalog): the floor any Iceberg writer pays. The
other variants start from the producer's table and include validation. Ratios are events/s of a
variant divided by raw's events/s for the same shape. Each row also shows the process's user and
kernel CPU seconds during a run (medians): wall time below half the CPU is parallelism, and kernel
time is memory the kernel had to zero first (what makes runs of the same code differ).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from icebergdo import Lakehouse
from icebergdo.schema import to_events
from icebergdo.writer import DEFAULT_MAX_ROWS

T0_US = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1_000_000)
SPAN_US = 6 * 3600 * 1_000_000  # events spread over 6 hours
LATE_US = 20 * 60 * 1_000_000  # up to 20 minutes late


def make_events(n: int, *, realistic: bool) -> pa.Table:
    """Producer-shaped input: what a service would hand to `extend` (no ingested_at yet)."""
    rng = random.Random(11)
    step = max(1, SPAN_US // max(n, 1))
    if realistic:
        ts_us = [T0_US + i * step - rng.randrange(LATE_US) for i in range(n)]
    else:
        ts_us = [T0_US + i * step for i in range(n)]
    types = ["webhook", "rpc", "ws", "custom"]
    columns = {
        "ts": pa.array(ts_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "type": [types[i % 4] for i in range(n)],
        "source": [f"service-{i % 17}" for i in range(n)],
        "payload": [json.dumps({"order": i, "amount": i % 1000 / 10, "currency": "EUR", "ok": i % 3 == 0,
                                "customer": {"id": f"cus_{rng.randrange(10**9):09d}", "email": f"user{i % 5000}@example.com"},
                                "items": [{"sku": f"SKU-{(i + k) % 997}", "qty": k + 1} for k in range(1 + i % 3)],
                                "note": "x" * rng.randrange(40, 160)}) for i in range(n)],
    }
    if not realistic:
        columns = {"id": [f"evt-{i:012d}" for i in range(n)], **columns}
    return pa.table(columns)


def run_raw(validated: pa.Table, folder: Path) -> dict:
    """The floor: one zstd Parquet file of the already-validated rows (no validation, no catalog)."""
    start = time.perf_counter()
    pq.write_table(validated, folder / "raw.parquet", compression="zstd")
    return {"commits": 0, "files": 1, "seconds": time.perf_counter() - start}


def run_writer(events: pa.Table, folder: Path, *, durable: bool, chunk: int, max_rows: int) -> dict:
    lh = Lakehouse.open(folder / "lh")
    lh.events_table()
    start = time.perf_counter()
    with lh.writer(max_rows=max_rows, max_age=60, durable=durable, wal_dir=folder / "wal" if durable else None) as w:
        for offset in range(0, events.num_rows, chunk):
            w.extend(events.slice(offset, chunk))
    took = time.perf_counter() - start
    st = w.stats()
    assert st.flushed == events.num_rows, st
    return {"commits": st.commits, "files": st.files, "seconds": took}


def run_append_events(events: pa.Table, folder: Path) -> dict:
    lh = Lakehouse.open(folder / "lh")
    lh.events_table()
    start = time.perf_counter()
    result = lh.append_events(events)
    return {"commits": 1, "files": result.files, "seconds": time.perf_counter() - start}


def timed_once(fn: Callable[[Path], dict]) -> tuple[float, dict]:
    """One fresh run: its seconds and counts, and the process's user and kernel CPU seconds during it
    (kernel time is where fresh memory is paid for: the kernel zeroes every page it hands out)."""
    folder = Path(tempfile.mkdtemp(prefix="icebergdo-bench-"))
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        info = fn(folder)
        after = resource.getrusage(resource.RUSAGE_SELF)
        info["user"], info["sys"] = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
        return info.pop("seconds", time.perf_counter() - start), info
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="events per run (default: %(default)s; the issue's full size is 1000000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per variant, interleaved; the median is reported (default: %(default)s)")
    ap.add_argument("--chunk", type=int, default=10_000, help="events per writer.extend call (default: %(default)s)")
    ap.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="writer max_rows (default: the writer's default, %(default)s)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    shapes = {name: make_events(args.events, realistic=name == "realistic") for name in ("realistic", "ordered, with ids")}
    validated = {name: to_events(events) for name, events in shapes.items()}
    n = args.events
    variants: list[tuple[str, str, Callable[[Path], dict]]] = []
    for shape, events in shapes.items():
        variants += [
            (shape, "raw pyarrow.parquet.write_table", lambda f, v=validated[shape]: run_raw(v, f)),
            (shape, "lh.append_events (one commit)", lambda f, e=events: run_append_events(e, f)),
            (shape, "writer, non-durable", lambda f, e=events: run_writer(e, f, durable=False, chunk=args.chunk, max_rows=args.max_rows)),
            (shape, "writer, durable (WAL + fsync)", lambda f, e=events: run_writer(e, f, durable=True, chunk=args.chunk, max_rows=args.max_rows)),
        ]
    print(f"ingest benchmark: {n:,} events per run, median of {args.repeat} run(s), extend chunks of {args.chunk:,}, "
          f"writer max_rows={args.max_rows:,}, python {sys.version.split()[0]}, pyarrow {pa.__version__}")
    for shape, events in shapes.items():
        print(f"  shape '{shape}': columns {', '.join(events.column_names)}; {events.nbytes / n:,.0f} Arrow bytes/event; "
              f"payload {pc_mean_len(events):,.0f} bytes on average")
    print(f"{'shape':<18} {'variant':<34} {'seconds':>8} {'events/s':>12} {'vs raw':>7} {'commits':>8} {'files':>6} {'cpu user':>9} {'cpu sys':>8}")
    # Round-robin over the variants, so load from other processes hits them all alike.
    runs: dict[tuple[str, str], list[tuple[float, dict]]] = {(s, v): [] for s, v, _ in variants}
    for _ in range(args.repeat):
        for shape, name, fn in variants:
            runs[(shape, name)].append(timed_once(fn))
    raw_rate: dict[str, float] = {}
    for shape, name, _ in variants:
        seconds, info = statistics.median(t for t, _ in runs[(shape, name)]), runs[(shape, name)][-1][1]
        rate = n / seconds
        raw_rate.setdefault(shape, rate)
        user = statistics.median(i["user"] for _, i in runs[(shape, name)])
        kernel = statistics.median(i["sys"] for _, i in runs[(shape, name)])
        print(f"{shape:<18} {name:<34} {seconds:>8.3f} {rate:>12,.0f} {rate / raw_rate[shape]:>6.2f}x {info['commits']:>8} {info['files']:>6} "
              f"{user:>8.3f}s {kernel:>7.3f}s")
    print("cpu user / cpu sys: the process's CPU seconds during a run (all threads; medians). Runs whose kernel time is high paid for")
    print("fresh memory (the kernel zeroes every page it hands out); docs/writer.md, Throughput.")
    print("targets (issue 11): append_events >= 0.80x raw, durable writer >= 0.50x raw, on the realistic shape")
    return 0


def pc_mean_len(events: pa.Table) -> float:
    import pyarrow.compute as pc

    return float(pc.mean(pc.binary_length(events.column("payload"))).as_py())


if __name__ == "__main__":
    sys.exit(main())
