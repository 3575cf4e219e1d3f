"""Many writers, one table: commits/s and conflict retries for 1, 2, 4, 8 writer processes.

Two shared catalogs, side by side in one run:
- sqlite:   SQLite catalog file + folder warehouse (one machine);
- postgres: PostgreSQL catalog + SeaweedFS S3 warehouse (both started here, 127.0.0.1, private).

Each writer process appends `--appends` small batches (one commit each) to the same table.
Reported per configuration (median over `--repeat` runs): commits/s, pyiceberg's conflict
retries (`commit.retry.*`), icebergdo's own retries above them, and the rows check (DuckDB).

    /tmp/venv0/bin/python bench/concurrency.py                    # small: 5 appends per writer
    /tmp/venv0/bin/python bench/concurrency.py --appends 20 --repeat 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402

from icebergdo import Lakehouse, commit  # noqa: E402
from icebergdo.config import Config  # noqa: E402

TABLE = "bench.appends"
SCHEMA = pa.schema([pa.field("writer", pa.int32()), pa.field("seq", pa.int32()), pa.field("n", pa.int32())])
ROWS = 10


def writer(config: Config, w: int, appends: int, ready: object, go: object, out: object) -> None:
    try:
        lh = Lakehouse.open(config)
        lh.table(TABLE)  # warm: catalog connection, FileIO
        ready.release()  # type: ignore[attr-defined]
        go.wait(120)  # type: ignore[attr-defined]
        for seq in range(appends):
            batch = pa.table({"writer": [w] * ROWS, "seq": [seq] * ROWS, "n": list(range(ROWS))}, schema=SCHEMA)
            lh.append(TABLE, batch)
        out.put(("ok", time.monotonic(), commit.stats()))  # type: ignore[attr-defined]
    except BaseException as e:  # noqa: BLE001
        out.put(("error", time.monotonic(), repr(e)))  # type: ignore[attr-defined]


def run_once(config: Config, writers: int, appends: int, properties: dict[str, str] | None = None) -> dict[str, float]:
    lh = Lakehouse.open(config)
    lh.create_table(TABLE, SCHEMA, data_path="bench/appends", properties=properties)
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(config, w, appends, ready, go, out)) for w in range(writers)]
    for p in procs:
        p.start()
    for _ in procs:
        if not ready.acquire(timeout=120):
            raise RuntimeError("a writer did not start")
    start = time.monotonic()
    go.set()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(30)
    errors = [r[2] for r in results if r[0] != "ok"]
    if errors:
        raise RuntimeError(f"writers failed: {errors}")
    elapsed = max(r[1] for r in results) - start
    stats: dict[str, int] = {}
    for r in results:
        for k, v in r[2].items():
            stats[k] = stats.get(k, 0) + v
    total, batches = lh.duckdb().execute(f"SELECT count(*), count(DISTINCT (writer, seq)) FROM {TABLE}").fetchone()
    expected = writers * appends
    if (total, batches) != (expected * ROWS, expected):
        raise RuntimeError(f"rows check failed: {total} rows / {batches} batches, expected {expected * ROWS} / {expected}")
    return {
        "commits_per_s": expected / elapsed,
        "conflicts": stats.get("pyiceberg_conflict_retries", 0),
        "retries": stats.get("retries", 0),
        "seconds": elapsed,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writers", default="1,2,4,8", help="comma-separated writer counts (default 1,2,4,8)")
    ap.add_argument("--appends", type=int, default=5, help="appends (commits) per writer (default 5; full: 20)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration; the median is reported (default 1)")
    ap.add_argument("--catalogs", default="sqlite,postgres", help="which catalogs (default sqlite,postgres)")
    ap.add_argument("--retry-min-ms", type=int, help="override commit.retry.min-wait-ms (default: DEFAULT_TABLE_PROPERTIES)")
    ap.add_argument("--retry-max-ms", type=int, help="override commit.retry.max-wait-ms")
    ap.add_argument("--modes", default="lock,no-lock", help="lock (per-table commit lock, the default) and/or no-lock (optimistic only)")
    args = ap.parse_args()
    props = {}
    if args.retry_min_ms is not None:
        props["commit.retry.min-wait-ms"] = str(args.retry_min_ms)
    if args.retry_max_ms is not None:
        props["commit.retry.max-wait-ms"] = str(args.retry_max_ms)
    counts = [int(x) for x in args.writers.split(",")]
    catalogs = args.catalogs.split(",")

    from tests import servers  # the same private servers the test suite uses

    work = Path(tempfile.mkdtemp(prefix="icebergdo-bench-"))
    s3 = pg = None
    n = 0
    try:
        if "postgres" in catalogs:
            s3 = servers.start_seaweedfs(work / "s3")
            pg = servers.start_postgres(work / "pg")

        def fresh(catalog: str) -> Config:
            nonlocal n
            n += 1
            if catalog == "sqlite":
                return Config.from_home(work / f"home{n}")
            assert s3 is not None and pg is not None
            bucket = s3.create_bucket(f"bench{n}")
            return Config.from_dict({"catalog": {"uri": pg.create_database(f"bench{n}"), "warehouse": f"s3://{bucket}/lake"}, "s3": s3.s3_settings()})

        modes = {"lock": {**props}, "no-lock": {**props, commit.LOCK_PROPERTY: "false"}}
        modes = {m: modes[m] for m in args.modes.split(",")}
        print(f"{args.appends} appends x {ROWS} rows per writer, median of {args.repeat} run(s); "
              f"sqlite = SQLite + folder, postgres = PostgreSQL + SeaweedFS S3")
        print(f"{'catalog':9} {'mode':8} {'writers':>7} {'commits':>7} {'commits/s':>10} {'vs 1':>6} {'conflicts':>9} {'retries':>7} {'seconds':>8}")
        for catalog in catalogs:
            for mode, mode_props in modes.items():
                base = None
                for w in counts:
                    runs = [run_once(fresh(catalog), w, args.appends, mode_props) for _ in range(args.repeat)]
                    rate = statistics.median(r["commits_per_s"] for r in runs)
                    base = base or rate
                    print(
                        f"{catalog:9} {mode:8} {w:>7} {w * args.appends:>7} {rate:>10.1f} {rate / base:>5.2f}x "
                        f"{statistics.median(r['conflicts'] for r in runs):>9.0f} {statistics.median(r['retries'] for r in runs):>7.0f} "
                        f"{statistics.median(r['seconds'] for r in runs):>8.1f}",
                        flush=True,
                    )
    finally:
        if s3 is not None:
            s3.stop()
        if pg is not None:
            pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
