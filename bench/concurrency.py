"""Many writers, one table: aggregate events/s of 1, 2, 4, 8 durable writer processes, and the CPU ceiling.

Each writer process runs the durable buffered writer at its defaults (its own default WAL folder)
and commits `--chunks` chunks of `--chunk` events (one `extend` + `flush()` each), so the writers
commit concurrently to `events.raw`. Input has the realistic shape: no ids, event times spread
over 6 hours and up to 20 minutes late (out of order), JSON payloads of a few hundred bytes;
events are generated before the clock starts. Catalogs, side by side in one run:

- postgres: PostgreSQL catalog + SeaweedFS S3 warehouse (both started here, 127.0.0.1, private);
- sqlite:   SQLite catalog file + folder warehouse (one machine).

Reported per configuration (median over `--repeat` runs): events/s from the start signal until
the last writer closed, the ratio to one writer, commits, and CPU: seconds used by the writers
and by the servers (SeaweedFS + PostgreSQL process trees, from /proc), the share of the machine's
cores that was, and the "ceiling": events/s if every core did nothing but this workload at the
measured CPU cost per event; the time per commit spent uploading (outside the commit lock),
queueing for the lock, and holding it; and the machine's CPU pressure (Linux PSI, the share of
time runnable tasks waited for a core: high means other processes took the cores, and the ratios
say little). Every run is checked with DuckDB: 0 lost, 0 duplicated.

    python bench/concurrency.py                                   # 1,2,4,8 writers, both catalogs
    python bench/concurrency.py --catalogs postgres --writers 1,8 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402

from icebergdo import Lakehouse, commit  # noqa: E402
from icebergdo.config import Config  # noqa: E402

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOURS = 6


def make_chunk(rng: random.Random, writer: int, start: int, n: int) -> pa.Table:
    """No ids; times over 6 hours, up to 20 min late; ~300-byte JSON payloads; (source, n) identifies an event."""
    ts, payload = [], []
    for i in range(start, start + n):
        ts.append(T0 + timedelta(seconds=rng.uniform(0, HOURS * 3600)) - timedelta(seconds=rng.uniform(0, 1200)))
        payload.append(json.dumps({"n": i, "order": rng.randrange(10**9), "amount": round(rng.uniform(1, 999), 2),
                                   "customer": {"id": f"cus_{rng.randrange(10**12):012d}", "email": f"u{rng.randrange(10**6)}@example.com"},
                                   "items": [{"sku": f"sku-{rng.randrange(10**5)}", "qty": rng.randrange(1, 5)} for _ in range(3)],
                                   "note": "x" * rng.randrange(40, 120)}))
    return pa.table({
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "type": pa.array([rng.choice(["webhook", "rpc", "ws", "custom"]) for _ in range(n)]),
        "source": pa.array([f"w{writer}"] * n),
        "payload": pa.array(payload),
    })


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def writer(config: Config, w: int, chunks: int, chunk: int, state: str, flush: bool, ready: Any, go: Any, out: Any) -> None:
    os.environ["XDG_STATE_HOME"] = state  # default WAL folders of a non-embedded lakehouse live here
    try:
        rng = random.Random(w)
        data = [make_chunk(rng, w, c * chunk, chunk) for c in range(chunks)]
        lh = Lakehouse.open(config)
        lh.events_table()  # warm: catalog connection, FileIO
        ready.release()
        go.wait(300)
        cpu0 = _cpu_s()
        with lh.writer(durable=True) as wr:
            for t in data:
                wr.extend(t)
                if flush:
                    wr.flush()
        lh.upkeep.wait_idle(600)
        out.put(("ok", time.monotonic(), _cpu_s() - cpu0, wr.stats().commits, commit.stats()))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        out.put(("error", time.monotonic(), 0.0, 0, repr(e)))


def tree_cpu_s(roots: list[int]) -> float:
    """CPU seconds (user+sys, with reaped children's) of the process trees under `roots`, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            text = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        stats[int(d)] = (ppid, (utime + stime + cutime + cstime) / tick)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo += children.get(pid, [])
    return total


def cpu_pressure() -> str:
    """Linux PSI: the share of the last 10 s in which runnable tasks waited for a core (other processes' load)."""
    try:
        first = Path("/proc/pressure/cpu").read_text().split("\n")[0]
        return first.split()[1].split("=")[1] + "%"
    except (OSError, IndexError):
        return "n/a"


def run_once(config: Config, writers: int, chunks: int, chunk: int, state: Path, server_pids: list[int], flush: bool) -> dict[str, Any]:
    lh = Lakehouse.open(config)
    lh.events_table()
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(config, w, chunks, chunk, str(state), flush, ready, go, out)) for w in range(writers)]
    for p in procs:
        p.start()
    for _ in procs:
        if not ready.acquire(timeout=300):
            raise RuntimeError("a writer did not start")
    servers0 = tree_cpu_s(server_pids)
    start = time.monotonic()
    go.set()
    results = [out.get(timeout=1800) for _ in procs]
    servers_cpu = tree_cpu_s(server_pids) - servers0
    for p in procs:
        p.join(60)
    errors = [r[4] for r in results if r[0] != "ok"]
    if errors:
        raise RuntimeError(f"writers failed: {errors}")
    elapsed = max(r[1] for r in results) - start
    events = writers * chunks * chunk
    total, distinct = lh.duckdb().execute(
        "SELECT count(*), count(DISTINCT (source, payload::JSON->>'n')) FROM events").fetchone()
    if (total, distinct) != (events, events):
        raise RuntimeError(f"rows check failed: {total} rows / {distinct} distinct, expected {events} (lost or duplicated)")
    writers_cpu = sum(r[2] for r in results)
    phases = {k: sum(r[4].get(k, 0.0) for r in results) for k in ("upload_s", "lock_wait_s", "locked_s")}
    commits = max(1, sum(r[3] for r in results))
    cores = os.cpu_count() or 1
    return {
        "events_per_s": events / elapsed,
        "commits": sum(r[3] for r in results),
        "seconds": elapsed,
        "writers_cpu_s": writers_cpu,
        "servers_cpu_s": servers_cpu,
        "cpu_share": (writers_cpu + servers_cpu) / (elapsed * cores),
        "ceiling_events_per_s": events / ((writers_cpu + servers_cpu) / cores),
        "pressure": cpu_pressure(),
        **{f"{k[:-2]}_ms": 1000 * v / commits for k, v in phases.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writers", default="1,2,4,8", help="comma-separated writer counts (default 1,2,4,8)")
    ap.add_argument("--chunks", type=int, default=6, help="commits per writer (default 6)")
    ap.add_argument("--chunk", type=int, default=5000, help="events per commit (default 5000)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration; the median is reported (default 1)")
    ap.add_argument("--catalogs", default="postgres,sqlite", help="which catalogs (default postgres,sqlite)")
    ap.add_argument("--modes", default="defaults,flush", help="defaults: the writer commits by its own thresholds (5 s, 1M rows) "
                    "and on close; flush: a commit after every chunk (commit-heavy: the commit lock matters). Default: both")
    args = ap.parse_args()
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
        server_pids = [p for p in (s3.pid if s3 else None, pg.pid if pg else None) if p]

        def fresh(catalog: str) -> Config:
            nonlocal n
            n += 1
            if catalog == "sqlite":
                return Config.from_home(work / f"home{n}")
            assert s3 is not None and pg is not None
            bucket = s3.create_bucket(f"bench{n}")
            return Config.from_dict({"catalog": {"uri": pg.create_database(f"bench{n}"), "warehouse": f"s3://{bucket}/lake"},
                                     "s3": s3.s3_settings()})

        print(f"{args.chunks} chunks x {args.chunk} events per writer (durable writer at its defaults; mode flush: a commit per chunk); "
              f"no ids, {HOURS} h, up to 20 min late, ~300-byte payloads; median of {args.repeat} run(s); {os.cpu_count()} cores; "
              "postgres = PostgreSQL + SeaweedFS S3, sqlite = SQLite + folder; every run checked: 0 lost, 0 duplicated")
        print(f"{'catalog':9} {'mode':8} {'writers':>7} {'events/s':>9} {'vs 1':>6} {'commits':>7} {'seconds':>7} "
              f"{'cpu writers':>11} {'cpu servers':>11} {'cpu share':>9} {'ceiling ev/s':>12}   per commit: upload / lock wait / locked (ms)   cpu pressure")
        for catalog in catalogs:
            for mode in args.modes.split(","):
                base = None
                for w in counts:
                    runs = [run_once(fresh(catalog), w, args.chunks, args.chunk, work / f"state{n}", server_pids if catalog == "postgres" else [],
                                     mode == "flush") for _ in range(args.repeat)]
                    med: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "pressure"}
                    med["pressure"] = runs[-1]["pressure"]
                    base = base or med["events_per_s"]
                    print(f"{catalog:9} {mode:8} {w:>7} {med['events_per_s']:>9,.0f} {med['events_per_s'] / base:>5.2f}x {med['commits']:>7.0f} "
                          f"{med['seconds']:>7.1f} {med['writers_cpu_s']:>10.1f}s {med['servers_cpu_s']:>10.1f}s {med['cpu_share']:>8.0%} "
                          f"{med['ceiling_events_per_s']:>12,.0f}   {med['upload_ms']:.0f} / {med['lock_wait_ms']:.0f} / {med['locked_ms']:.0f}   {med['pressure']}",
                          flush=True)
    finally:
        if s3 is not None:
            s3.stop()
        if pg is not None:
            pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
