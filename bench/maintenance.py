"""Maintenance benchmarks, measured side by side in one run.

(a) Compaction throughput (MB of input per second: plan + read + sort + write + commit) next to a
    raw pyarrow read + write of the same files (same codec) in the same run. Target: ≥ 0.7× raw.
(b) Commit latency of the 10th vs the Nth small append, on a table left alone (pyiceberg only) and
    on one where manifest rewrite + snapshot expiry run every `--every` appends (not timed as
    commits). Target: with maintenance, Nth ≤ 1.5× 10th.

    python bench/maintenance.py                    # small: 200 appends, 3 × 40 files
    python bench/maintenance.py --appends 1000     # the full size
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from icebergdo import Lakehouse
from icebergdo.maintenance.compact import compact
from icebergdo.maintenance.expire import expire
from icebergdo.maintenance.manifests import rewrite_manifests
from icebergdo.schema import (
    EVENT_ARROW_SCHEMA,
    EVENT_PARTITION_SPEC,
    EVENT_SCHEMA,
    EVENT_SORT_ORDER,
)
from icebergdo.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def batch(n: int, seed: int, *, stream_of: int | None = None) -> pa.Table:
    """n events in one hour, built column-wise (fast) in the table's Arrow schema.

    With `stream_of=k`, batch `seed` covers the seed-th of k successive slices of the hour (how a
    live stream arrives); without it, batches overlap in time (the worst case for the sort).
    """
    i = pa.array(range(n), pa.int64())
    base = int(T0.timestamp() * 1e6)
    if stream_of:
        slice_us = 3_600_000_000 // stream_of
        ts = pc.add(pc.multiply(i, slice_us // n), base + (seed % stream_of) * slice_us)
    else:
        ts = pc.add(pc.multiply(pc.bit_wise_and(pc.add(pc.multiply(i, 13), seed * 7919), 2047), 1_000_000), base)
    ts = ts.cast(pa.timestamp("us", tz="UTC"))
    ids = pa.array([f"{seed:08d}-{k:08d}" for k in range(n)], pa.string())
    payload = pa.array([f'{{"seq":{seed},"i":{k},"text":"{"x" * (k % 50)}"}}' for k in range(n)], pa.string())
    src = pa.array([f"s{k % 17}" for k in range(n)], pa.string())
    null = pa.nulls(n, pa.string())
    return pa.Table.from_arrays([ids, ts, pa.array(["webhook"] * n), src, null, null, payload, ts], schema=EVENT_ARROW_SCHEMA)


def make_table(lh: Lakehouse, name: str) -> None:
    lh.create_table(name, EVENT_SCHEMA, data_path=name.replace(".", "/"), partition_spec=EVENT_PARTITION_SPEC, sort_order=EVENT_SORT_ORDER)


def bench_compaction(lh: Lakehouse, files: int, rows: int, reps: int) -> None:
    print(f"(a) compaction of {files} small files × {rows} rows into one, median of {reps} runs each:")
    for label, stream in (("stream-like files (successive time slices)", True), ("overlapping files (full re-sort)", False)):
        comp, raw, raw_sorted = [], [], []
        size = 0
        for r in range(reps):
            name = f"bench.compact_{'s' if stream else 'o'}{r}"
            make_table(lh, name)
            order = list(range(files))
            if stream:
                order = order[1::2] + order[0::2]  # commits arrive a little out of order
            for i in order:
                lh.append(name, batch(rows, i, stream_of=files if stream else None), sort_by="ts")
            table = lh.table(name)
            tasks = list(table.scan().plan_files())
            size = sum(t.file.file_size_in_bytes for t in tasks)
            local = [t.file.file_path.removeprefix("file://") for t in tasks]
            # raw: pyarrow reads the same files (multi-threaded dataset scan) and writes one, same codec
            t0 = time.perf_counter()
            data = ds.dataset(local, format="parquet").to_table()
            pq.write_table(data, Path(lh.config.home or ".") / f"raw-{name}.parquet", compression="zstd")
            raw.append(size / (time.perf_counter() - t0) / 1e6)
            t0 = time.perf_counter()
            data = ds.dataset(local, format="parquet").to_table().sort_by("ts")
            pq.write_table(data, Path(lh.config.home or ".") / f"raw-sorted-{name}.parquet", compression="zstd")
            raw_sorted.append(size / (time.perf_counter() - t0) / 1e6)
            t0 = time.perf_counter()
            rep = compact(table, store=Store(lh.config))
            comp.append(rep.bytes_in / (time.perf_counter() - t0) / 1e6)
            assert rep.files_in == files and rep.files_out == 1, rep
        c, w, ws = statistics.median(comp), statistics.median(raw), statistics.median(raw_sorted)
        print(f"  {label} ({size / 1e6:.2f} MB):")
        print(f"    compaction    {c:8.2f} MB/s   (plan + read + sort + write + commit)")
        print(f"    raw pyarrow   {w:8.2f} MB/s   (read + write, same files, same codec)")
        print(f"    raw + sort    {ws:8.2f} MB/s   (read + sort by ts + write; compaction's actual work)")
        print(f"    ratio         {c / w:8.2f}× vs raw (target ≥ 0.70×: {'OK' if c / w >= 0.7 else 'MISSED'}),  {c / ws:.2f}× vs raw + sort")


def bench_commits(lh: Lakehouse, appends: int, every: int, baseline: bool = True) -> None:
    out = {}
    maint_s = 0.0
    for mode in ("pyiceberg only", "with maintenance") if baseline else ("with maintenance",):
        name = "bench.plain" if mode == "pyiceberg only" else "bench.maintained"
        make_table(lh, name)
        lat = []
        for i in range(appends):
            b = batch(2, i)
            t0 = time.perf_counter()
            lh.append(name, b)
            lat.append(time.perf_counter() - t0)
            if mode == "with maintenance" and (i + 1) % every == 0:
                t1 = time.perf_counter()
                rewrite_manifests(lh.table(name))
                expire(lh.table(name), store=Store(lh.config), older_than=datetime.now(UTC) + timedelta(seconds=1), retain_last=1)
                maint_s += time.perf_counter() - t1
        early = statistics.median(lat[5:15])
        late = statistics.median(lat[-10:])
        out[mode] = (early, late)
    print("(b) commit latency, small appends (2 rows), median of 10 commits around each point:")
    for mode, (early, late) in out.items():
        print(f"    {mode:17s} 10th {early * 1000:7.1f} ms   {appends}th {late * 1000:7.1f} ms   ratio {late / early:5.2f}×")
    ratio = out["with maintenance"][1] / out["with maintenance"][0]
    print(f"    maintenance every {every} appends took {maint_s:.1f} s in total (not counted as commit time)")
    print(f"    target with maintenance ≤ 1.50×: {'OK' if ratio <= 1.5 else 'MISSED'} ({ratio:.2f}×)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--appends", type=int, default=200, help="small appends for (b) (default 200; the target is for 1000)")
    ap.add_argument("--every", type=int, default=10, help="run manifest rewrite + expiry every N appends in (b) (default 10)")
    ap.add_argument("--parts", default="ab", help="which benchmarks to run: a, b or ab (default)")
    ap.add_argument("--no-baseline", action="store_true", help="(b): skip the pyiceberg-only table (slow at 1000 appends)")
    ap.add_argument("--files", type=int, default=40, help="small files per compaction run in (a)")
    ap.add_argument("--rows", type=int, default=40000, help="rows per small file in (a)")
    ap.add_argument("--reps", type=int, default=3, help="compaction repetitions in (a)")
    ap.add_argument("--home", help="lakehouse folder (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="icebergdo-bench-") as tmp:
        lh = Lakehouse.open(args.home or tmp)
        if "a" in args.parts:
            bench_compaction(lh, args.files, args.rows, args.reps)
        if "b" in args.parts:
            bench_commits(lh, args.appends, args.every, baseline=not args.no_baseline)


if __name__ == "__main__":
    main()
