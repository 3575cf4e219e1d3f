"""Commit latency over 1,000 small commits at default settings, with only what the defaults do.

A streaming table takes a commit every few seconds; each commit reads and rewrites metadata that
grows with the history kept. This bench makes `--commits` small commits (100 events each, spread
over 12 hours, no ids, event times up to 20 minutes late and out of order, JSON payloads of a few
hundred bytes) and compares the median latency of the last window of commits with the window
around commit 10. Nothing is tuned: fresh lakehouses, default table properties, default writer
options; the only upkeep is what the defaults do (the writer's post-commit upkeep).

Variants, side by side in one run (one fresh lakehouse each):
- append_events       `lh.append_events(rows)`: one commit per call;
- writer              the durable buffered writer at its defaults, `extend` + `flush()` per commit;
- append_events/ids   flattering shape: ids given, time-ordered, one hour.

    python bench/commits.py                       # 1,000 commits per variant, local folder + SQLite
    python bench/commits.py --backend s3pg        # SeaweedFS S3 + PostgreSQL (started here, 127.0.0.1)
    python bench/commits.py --commits 300 --variants append_events
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from icebergdo import Config, Lakehouse  # noqa: E402

T0 = datetime(2026, 3, 1, tzinfo=UTC)
EVENTS_PER_COMMIT = 100
HOURS = 12
WINDOW = 20


def realistic(rng: random.Random, commit: int, n: int) -> list[dict[str, Any]]:
    """No ids; times over 12 hours, each up to 20 min late (out of order); payloads of ~300 bytes."""
    out = []
    for i in range(n):
        hour = (commit * 7 + i) % HOURS
        ts = T0 + timedelta(hours=hour, seconds=rng.uniform(0, 3600)) - timedelta(seconds=rng.uniform(0, 1200))
        out.append({
            "ts": ts.isoformat(),
            "type": rng.choice(["webhook", "rpc", "ws", "custom"]),
            "source": f"service-{rng.randrange(17)}",
            "payload": {"order": rng.randrange(10**9), "amount": round(rng.uniform(1, 999), 2), "currency": "EUR",
                        "customer": {"id": f"cus_{rng.randrange(10**12):012d}", "email": f"user{rng.randrange(10**6)}@example.com"},
                        "items": [{"sku": f"sku-{rng.randrange(10**5)}", "qty": rng.randrange(1, 5)} for _ in range(3)],
                        "note": "x" * rng.randrange(40, 120)},
        })
    return out


def flattering(commit: int, n: int) -> list[dict[str, Any]]:
    base = T0 + timedelta(seconds=commit * n)
    return [{"id": f"evt-{commit:06d}-{i:04d}", "ts": (base + timedelta(seconds=i)).isoformat(), "type": "webhook",
             "source": "stripe", "payload": {"i": i}} for i in range(n)]


def metadata_size(lh: Lakehouse) -> int:
    table = lh.events_table()
    return len(table.io.new_input(table.metadata_location).open().read())


def run(variant: str, config: Config, commits: int, seed: int, wal_root: Path) -> dict[str, Any]:
    lh = Lakehouse.open(config)
    rng = random.Random(seed)
    batches = [flattering(c, EVENTS_PER_COMMIT) if variant == "append_events/ids" else realistic(rng, c, EVENTS_PER_COMMIT)
               for c in range(commits)]
    lat: list[float] = []
    cpu: list[float] = []
    writer = lh.writer(durable=True) if variant == "writer" else None
    # CPU of the thread that commits (the caller's, or the writer's flusher): what a commit costs,
    # whatever else the machine (or the upkeep thread) is doing meanwhile.
    clock = time.pthread_getcpuclockid(writer._flusher.ident) if writer is not None and writer._flusher.ident else time.CLOCK_THREAD_CPUTIME_ID
    try:
        for rows in batches:
            t, c = time.perf_counter(), time.clock_gettime(clock)
            if writer is not None:
                writer.extend(rows)
                writer.flush()
            else:
                lh.append_events(rows)
            lat.append(time.perf_counter() - t)
            cpu.append(time.clock_gettime(clock) - c)
    finally:
        if writer is not None:
            writer.close()
    lh.upkeep.wait_idle(600)
    table = lh.events_table()
    snap = table.current_snapshot()
    manifests = len(snap.manifests(table.io)) if snap else 0
    total = lh.query("SELECT count(*) AS n FROM events").column("n")[0].as_py()
    up = lh.upkeep.stats()
    return {
        "lat": lat,
        "cpu": cpu,
        "metadata_bytes": metadata_size(lh),
        "snapshots": len(table.metadata.snapshots),
        "manifests": manifests,
        "data_files": sum(1 for _ in table.scan().plan_files()),
        "rows": total,
        "upkeep_rounds": up.rounds,
        "upkeep_skipped": up.skipped,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commits", type=int, default=1000)
    ap.add_argument("--backend", choices=("local", "s3pg"), default="local")
    ap.add_argument("--variants", default="append_events,writer,append_events/ids")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="also print the per-commit latencies as JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="icebergdo-commits-"))
    s3 = pg = None
    if args.backend == "s3pg":
        from tests import servers

        s3 = servers.start_seaweedfs(work / "s3")
        pg = servers.start_postgres(work / "pg")
    n = 0

    def fresh() -> Config:
        nonlocal n
        n += 1
        if s3 is None or pg is None:
            return Config.from_home(work / f"home{n}")
        bucket = s3.create_bucket(f"commits{n}")
        return Config.from_dict({"catalog": {"uri": pg.create_database(f"commits{n}"), "warehouse": f"s3://{bucket}/lake"},
                                 "s3": s3.s3_settings()}, source=f"bench s3pg #{n}")

    try:
        print(f"{args.commits} commits x {EVENTS_PER_COMMIT} events, backend {args.backend}; realistic shape: no ids, "
              f"{HOURS} hours, up to 20 min late/out of order, ~300-byte JSON payloads; defaults only")
        print(f"windows: median latency of commits 1-{WINDOW} (around commit 10) vs the last {WINDOW}; "
              "cpu ratio = the same for the CPU time of the committing thread (insensitive to other load; upkeep runs in another thread)")
        head = f"{'variant':18} {'first':>8} {'last':>8} {'ratio':>6} {'cpu ratio':>9} {'meta.json':>10} {'snaps':>6} {'manifests':>9} {'files':>6} {'upkeep':>6} {'rows':>7}"
        print(head)
        out = {}
        for variant in args.variants.split(","):
            r = run(variant, fresh(), args.commits, args.seed, work)
            lat, cpu = r["lat"], r["cpu"]
            first, last = statistics.median(lat[:WINDOW]), statistics.median(lat[-WINDOW:])
            cpu_ratio = statistics.median(cpu[-WINDOW:]) / max(statistics.median(cpu[:WINDOW]), 1e-9)
            print(f"{variant:18} {first * 1000:7.1f}ms {last * 1000:7.1f}ms {last / first:5.2f}x {cpu_ratio:8.2f}x {r['metadata_bytes'] / 1024:8.1f}KB "
                  f"{r['snapshots']:>6} {r['manifests']:>9} {r['data_files']:>6} {r['upkeep_rounds']:>6} {r['rows']:>7}", flush=True)
            steps = [f"{statistics.median(lat[i:i + WINDOW]) * 1000:.0f}" for i in range(0, len(lat), max(WINDOW, len(lat) // 10))]
            print(f"{'':18} medians every {max(WINDOW, len(lat) // 10)} commits (ms): {' '.join(steps)}")
            if r["rows"] != args.commits * EVENTS_PER_COMMIT:
                print(f"  ROWS CHECK FAILED: {r['rows']} != {args.commits * EVENTS_PER_COMMIT}")
                return 1
            out[variant] = {k: v for k, v in r.items() if k not in ("lat", "cpu")} | ({"lat": lat, "cpu": cpu} if args.json else {})
        if args.json:
            print(json.dumps(out))
    finally:
        if s3 is not None:
            s3.stop()
        if pg is not None:
            pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
