"""Ingest throughput: the buffered writer and `lh.append_events` next to raw Parquet, in one run.

    python bench/ingest.py                       # 100k events, 5 interleaved repeats (median)
    python bench/ingest.py --events 1000000      # the full size from the issue

Every variant writes the same rows (ids, timestamps over a few hours, JSON payloads) to a fresh
embedded lakehouse (local folder + SQLite) and is timed from the first call until everything is
committed. "raw" is `pyarrow.parquet.write_table` of the already-validated rows to one zstd
file (no validation, no partitioning, no catalog): the floor any Iceberg writer pays. The other
variants start from the producer's table and include validation. Ratios are events/s of a variant divided by raw's events/s.
"""

from __future__ import annotations

import argparse
import json
import logging
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
SPAN_US = 4 * 3600 * 1_000_000  # events spread over 4 hours, arriving in time order


def make_events(n: int) -> pa.Table:
    """Producer-shaped input: what a service would hand to `extend` (no ingested_at yet)."""
    step = max(1, SPAN_US // max(n, 1))
    ts = pa.array([T0_US + i * step for i in range(n)], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    types = ["webhook", "rpc", "ws", "custom"]
    return pa.table({
        "id": [f"evt-{i:012d}" for i in range(n)],
        "ts": ts,
        "type": [types[i % 4] for i in range(n)],
        "source": [f"service-{i % 17}" for i in range(n)],
        "payload": [json.dumps({"order": i, "amount": i % 1000 / 10, "currency": "EUR", "ok": i % 3 == 0}) for i in range(n)],
    })


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
    """One fresh run: its seconds and counts."""
    folder = Path(tempfile.mkdtemp(prefix="icebergdo-bench-"))
    try:
        start = time.perf_counter()
        info = fn(folder)
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
    events = make_events(args.events)
    validated = to_events(events)
    n = events.num_rows
    variants: list[tuple[str, Callable[[Path], dict]]] = [
        ("raw pyarrow.parquet.write_table", lambda f: run_raw(validated, f)),
        ("writer, non-durable", lambda f: run_writer(events, f, durable=False, chunk=args.chunk, max_rows=args.max_rows)),
        ("writer, durable (WAL + fsync)", lambda f: run_writer(events, f, durable=True, chunk=args.chunk, max_rows=args.max_rows)),
        ("lh.append_events (one commit)", lambda f: run_append_events(events, f)),
    ]
    print(f"ingest benchmark: {n:,} events, median of {args.repeat} run(s), extend chunks of {args.chunk:,}, "
          f"writer max_rows={args.max_rows:,}, python {sys.version.split()[0]}, pyarrow {pa.__version__}")
    print(f"{'variant':<34} {'seconds':>8} {'events/s':>12} {'vs raw':>7} {'commits':>8} {'files':>6}")
    # Round-robin over the variants, so load from other processes hits them all alike.
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    infos: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name, fn in variants:
            seconds, infos[name] = timed_once(fn)
            times[name].append(seconds)
    raw_rate = None
    for name, _ in variants:
        seconds, info = statistics.median(times[name]), infos[name]
        rate = n / seconds
        raw_rate = raw_rate or rate
        print(f"{name:<34} {seconds:>8.3f} {rate:>12,.0f} {rate / raw_rate:>6.2f}x {info['commits']:>8} {info['files']:>6}")
    print("targets: writer non-durable >= 0.80x raw, durable >= 0.50x raw")
    return 0


if __name__ == "__main__":
    sys.exit(main())
