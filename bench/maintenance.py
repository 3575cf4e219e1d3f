"""Maintenance benchmarks, measured side by side in one run.

(a) Compaction throughput at the defaults a user gets (`maintain --compact`: min-input-files 5,
    the table's target file size: 32 MiB for events tables) next to a raw pyarrow read + write of the same files (same codec, one output
    per partition) in the same run, alternating which goes first; medians of `--reps` runs.
    Target: compaction >= 0.7x raw on every shape. The input is what `lh.append_events` makes of a
    stream: events WITHOUT ids (icebergdo assigns them), ~300-byte JSON payloads, spread over
    `--hours` hours, one append per arrival window (`--batches` of `--rows` events). Compaction
    also plans from and commits to the table's metadata (72 snapshots and manifests here): a fixed
    ~0.3 s that raw pyarrow does not pay, which weighs more the smaller the input. Shapes:

      late events     30 % of events arrive up to 20 minutes late (uniform), the rest within 2 s:
                      every file of an hour overlaps its neighbours (the realistic case)
      stream-like     every event within 2 s of its arrival: files overlap only at their edges
      ordered + ids   caller ids, strictly ordered: files are successive slices (the flattering case)
      overlapping     every batch spans all hours uniformly (the worst case)

(b) Commit latency of the 10th vs the Nth small append, on a table left alone (pyiceberg only) and
    on one where manifest rewrite + snapshot expiry run every `--every` appends (not timed as
    commits). Target: with maintenance, Nth <= 1.5x 10th.

    python bench/maintenance.py                    # (a) 72 x 20000 events per shape, 5 reps; (b) 200 appends
    python bench/maintenance.py --parts a --rows 8000   # ~40 MB: the fixed cost of a commit weighs more
    python bench/maintenance.py --parts a --reps 5
    python bench/maintenance.py --parts b --appends 1000
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from icebergdo import Lakehouse
from icebergdo.maintenance import maintain
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
T0_US = int(T0.timestamp() * 1_000_000)
SHAPES = ("late events", "stream-like", "ordered + ids", "overlapping")


def stream(shape: str, batches: int, rows: int, hours: float, seed: int = 7) -> list[pa.Table]:
    """The appends a producer makes: one Arrow table per arrival window, in arrival order."""
    rng = random.Random(seed)
    span = int(hours * 3600 * 1_000_000)
    out = []
    for b in range(batches):
        lo, hi = T0_US + span * b // batches, T0_US + span * (b + 1) // batches
        arrival = sorted(rng.randrange(lo, hi) for _ in range(rows))
        if shape == "late events":
            ts = [a - (rng.randrange(1_200_000_000) if rng.random() < 0.3 else rng.randrange(2_000_000)) for a in arrival]
        elif shape == "stream-like":
            ts = [a - rng.randrange(2_000_000) for a in arrival]
        elif shape == "ordered + ids":
            ts = arrival
        else:
            ts = [T0_US + rng.randrange(span) for _ in range(rows)]
        ts = [max(T0_US, t) for t in ts]
        payload = [
            json.dumps({
                "event": rng.choice(("invoice.paid", "charge.succeeded", "customer.updated", "push")),
                "customer": f"cus_{rng.randrange(10**8):08d}", "amount": rng.randrange(10**6), "currency": "eur",
                "lines": [{"sku": f"sku-{rng.randrange(10**4)}", "qty": rng.randrange(1, 5)} for _ in range(3)],
                "request": {"id": f"req_{rng.getrandbits(64):016x}", "idempotency_key": f"{rng.getrandbits(96):024x}"},
            })
            for _ in range(rows)
        ]
        cols = {
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "type": pa.array(["webhook"] * rows),
            "source": pa.array([rng.choice(("stripe", "github", "shopify")) for _ in range(rows)]),
            "payload": pa.array(payload),
        }
        if shape == "ordered + ids":
            cols = {"id": pa.array([f"evt_{b:06d}_{i:08d}" for i in range(rows)]), **cols}
        out.append(pa.table(cols))
    return out


def raw_read_write(paths_by_partition: dict[str, list[str]], out_dir: Path, sort: bool = False) -> None:
    """pyarrow alone: read each partition's files (multi-threaded dataset scan), write one zstd file."""
    for i, paths in enumerate(paths_by_partition.values()):
        data = ds.dataset(paths, format="parquet").to_table()
        if sort:
            data = data.sort_by("ts")
        pq.write_table(data, out_dir / f"raw-{i}.parquet", compression="zstd")


def bench_compaction(root: Path, shapes: list[str], batches: int, rows: int, hours: float, reps: int) -> None:
    print(f"(a) compaction at defaults vs raw pyarrow read + write, {batches} appends x {rows} events over {hours:g} h, "
          f"median of {reps} runs from the same table per shape (order alternated):")
    for shape in shapes:
        slug = shape.replace(" ", "-").replace("+", "")
        source = root / f"{slug}-source"
        lh = Lakehouse.open(source)
        lh.upkeep.enabled = False  # the stream's files as they land: the writer's own upkeep would compact them already
        appends = stream(shape, batches, rows, hours)
        for batch in appends:
            lh.append_events(batch)
        del lh
        comp, raw, raw_sorted = [], [], []
        info = ""
        for r in range(reps):
            # A copy of the catalog database: the table's metadata and files stay where they are and
            # are never modified (compaction writes new files and commits to the copy), so every run
            # starts from the same table.
            copy = root / f"{slug}-{r}"
            copy.mkdir()
            for db in source.glob("catalog.db*"):
                shutil.copy2(db, copy / db.name)
            lh = Lakehouse.open(copy)
            by_part: dict[str, list[str]] = defaultdict(list)
            size = 0
            for t in lh.table("events.raw").scan().plan_files():
                by_part[repr(t.file.partition)].append(t.file.file_path.removeprefix("file://"))
                size += t.file.file_size_in_bytes
            files = sum(len(v) for v in by_part.values())
            info = f"{files} files, {len(by_part)} hour partitions, {sum(b.num_rows for b in appends)} events, {size / 1e6:.1f} MB"
            out = copy / "raw"
            out.mkdir()
            order = ("raw", "compaction", "raw + sort") if r % 2 == 0 else ("raw + sort", "compaction", "raw")
            for which in order:
                t0 = time.perf_counter()
                if which == "compaction":
                    (rep,) = maintain(lh, ["events.raw"], ["compact"], progress=None)
                    comp.append(rep.bytes_in / (time.perf_counter() - t0) / 1e6)
                    assert rep.files_in == files and rep.files_out >= len(by_part), rep
                else:
                    raw_read_write(by_part, out, sort=which == "raw + sort")
                    (raw if which == "raw" else raw_sorted).append(size / (time.perf_counter() - t0) / 1e6)
            del lh
            shutil.rmtree(copy)
        c, w, ws = statistics.median(comp), statistics.median(raw), statistics.median(raw_sorted)
        print(f"  {shape} ({info}):")
        print(f"    compaction  {c:8.2f} MB/s   (maintain --compact: plan + read + merge + write + commit)")
        print(f"    raw pyarrow {w:8.2f} MB/s   (read + write, same files, same codec)")
        print(f"    raw + sort  {ws:8.2f} MB/s   (read + Table.sort_by(ts) + write)")
        print(f"    ratio       {c / w:8.2f}x vs raw (target >= 0.70x: {'OK' if c / w >= 0.7 else 'MISSED'}),  {c / ws:.2f}x vs raw + sort")


def batch(n: int, seed: int) -> pa.Table:
    """n events in one hour with ids, built column-wise (fast) in the table's Arrow schema (for (b))."""
    base = int(T0.timestamp() * 1e6)
    ts = pa.array([base + ((k * 13 + seed * 7919) % 2048) * 1_000_000 for k in range(n)], pa.timestamp("us", tz="UTC"))
    ids = pa.array([f"{seed:08d}-{k:08d}" for k in range(n)], pa.string())
    payload = pa.array([f'{{"seq":{seed},"i":{k}}}' for k in range(n)], pa.string())
    null = pa.nulls(n, pa.string())
    return pa.Table.from_arrays([ids, ts, pa.array(["webhook"] * n), null, null, null, payload, ts], schema=EVENT_ARROW_SCHEMA)


def make_table(lh: Lakehouse, name: str) -> None:
    lh.create_table(name, EVENT_SCHEMA, data_path=name.replace(".", "/"), partition_spec=EVENT_PARTITION_SPEC, sort_order=EVENT_SORT_ORDER)


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
    ap.add_argument("--parts", default="ab", help="which benchmarks to run: a, b or ab (default)")
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"(a): comma-separated subset of: {', '.join(SHAPES)}")
    ap.add_argument("--batches", type=int, default=72, help="(a): appends per table (default 72)")
    ap.add_argument("--rows", type=int, default=20000, help="(a): events per append (default 20000: ~100 MB of Parquet per shape)")
    ap.add_argument("--hours", type=float, default=3, help="(a): hours the events span (default 3)")
    ap.add_argument("--reps", type=int, default=5, help="(a): compaction runs per shape, each on a fresh copy (default 5)")
    ap.add_argument("--appends", type=int, default=200, help="(b): small appends (default 200; the target is for 1000)")
    ap.add_argument("--every", type=int, default=10, help="(b): manifest rewrite + expiry every N appends (default 10)")
    ap.add_argument("--no-baseline", action="store_true", help="(b): skip the pyiceberg-only table (slow at 1000 appends)")
    ap.add_argument("--home", help="folder for the lakehouses (default: a temporary one)")
    ap.add_argument("--no-thp", action="store_true",
                    help="run as `icebergdo maintain` does: transparent huge pages off for this process (icebergdo/cli/process.py)")
    args = ap.parse_args()
    if args.no_thp:
        from icebergdo.cli.process import disable_transparent_huge_pages, thp_disabled

        disable_transparent_huge_pages()
        print(f"transparent huge pages off for this process, as in `icebergdo maintain`: {thp_disabled()}")
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        ap.error(f"unknown shape(s): {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="icebergdo-bench-") as tmp:
        root = Path(args.home or tmp)
        if "a" in args.parts:
            bench_compaction(root, shapes, args.batches, args.rows, args.hours, args.reps)
        if "b" in args.parts:
            bench_commits(Lakehouse.open(root / "commits"), args.appends, args.every, baseline=not args.no_baseline)


if __name__ == "__main__":
    main()
