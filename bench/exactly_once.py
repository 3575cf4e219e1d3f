"""Exactly-once after aggressive expiry: SIGKILL a durable writer, expire all but the last snapshot, restart.

A child process appends realistic events (no caller ids: the writer assigns them; each payload
carries the child's own counter so an event can be recognised) from two threads through a
durable writer at its default thresholds except a short `max_age`, and records every event whose
`append` returned. It is SIGKILLed `--rounds` times: at a random moment, right before a commit,
and after three commits whose WAL segments were never deleted (the batches replay must skip).
Then every snapshot but the last is expired (`maintain --steps expire`, older_than 0, retain 1),
so the snapshot history no longer knows the committed batches, and a writer restarts on the same
WAL folder. Printed: acknowledged events, events present, lost, duplicated, and how many leftover
batches had been committed but were no longer in the history (what the ledger had to answer).

    python bench/exactly_once.py                       # local folder + SQLite, 6 kills
    python bench/exactly_once.py --backend s3pg --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from icebergdo import Config, Lakehouse, commit  # noqa: E402
from icebergdo.maintenance import MaintenanceOptions  # noqa: E402
from icebergdo.wal import WriteAheadLog  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
THREADS = 2
CHILD = r"""
import json, os, random, sys, threading, time
from datetime import UTC, datetime, timedelta
from icebergdo import Config, Lakehouse
from icebergdo.lakehouse import Lakehouse as L

cfg_file, wal, ack_dir, mode, rnd = sys.argv[1:6]
lh = Lakehouse.open(Config.from_dict(json.loads(open(cfg_file).read()), source="exactly-once bench"))
marker = os.path.join(ack_dir, f"marker-{rnd}")
real_append = L.append
commits = []
if mode == "after-commits":
    from icebergdo.wal import WriteAheadLog
    WriteAheadLog.delete = lambda self, paths: None  # segments outlive their commits ...
if mode in ("before-commit", "after-commits"):
    def append(self, *a, **k):
        if mode == "before-commit":
            open(marker, "w").close(); time.sleep(600)
        result = real_append(self, *a, **k)
        commits.append(result)
        if len(commits) == 3:  # ... three of them, then the process dies
            open(marker, "w").close(); time.sleep(600)
        return result
    L.append = append

t0 = datetime(2026, 3, 1, tzinfo=UTC)
w = lh.writer(wal_dir=wal, max_age=0.3)
def produce(k):
    rng = random.Random(f"{rnd}-{k}")
    with open(os.path.join(ack_dir, f"ack-{rnd}-{k}"), "w", buffering=1) as acks:
        for i in range(10_000_000):
            key = f"r{rnd}-t{k}-{i}"
            ts = t0 + timedelta(seconds=rng.uniform(0, 6 * 3600) - rng.uniform(0, 1200))
            w.append({"ts": ts.isoformat(), "type": "webhook", "source": "bench",
                      "payload": {"key": key, "amount": rng.randrange(10**6), "note": "x" * rng.randrange(100, 300)}})
            acks.write(key + "\n")  # only after append returned: the event is durable
threads = [threading.Thread(target=produce, args=(k,), daemon=True) for k in range(%d)]
for t in threads:
    t.start()
open(os.path.join(ack_dir, f"started-{rnd}"), "w").close()
time.sleep(600)
""" % THREADS  # noqa: UP031 - a script template, % keeps its f-strings intact


def config_dict(config: Config) -> dict:
    raw: dict = {"catalog": {"uri": config.catalog_uri, "warehouse": config.warehouse}}
    if config.s3 is not None:
        s3 = config.s3
        raw["s3"] = {k: v for k, v in {"endpoint": s3.endpoint, "region": s3.region, "access_key_id": s3.access_key_id,
                                        "secret_access_key": s3.secret_access_key, "path_style": s3.path_style}.items() if v is not None}
    return raw


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"child exited early: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {path.name}")
        time.sleep(0.02)


def run(config: Config, work: Path, rounds: int, seed: int) -> dict:
    lh = Lakehouse.open(config)
    lh.events_table()
    cfg = work / "config.json"
    cfg.write_text(json.dumps(config_dict(config)))
    cfg.chmod(0o600)
    wal, acks = work / "wal", work / "acks"
    acks.mkdir()
    rng = random.Random(seed)
    modes = (["random", "before-commit", "after-commits"] * rounds)[-rounds:]  # ends with after-commits
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for rnd, mode in enumerate(modes):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(cfg), str(wal), str(acks), mode, str(rnd)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            if mode == "random":
                wait_for(acks / f"started-{rnd}", proc)
                time.sleep(rng.uniform(0.5, 2.0))
            else:
                wait_for(acks / f"marker-{rnd}", proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if proc.stderr:
                proc.stderr.close()
    table = lh.events_table()
    snapshots_before = len(table.metadata.snapshots)
    in_history = commit.committed_batch_ids(table)
    log = WriteAheadLog(wal, table="events.raw")
    leftovers = [b.batch_id for b in log.leftovers()]
    log.close()
    lh.maintain(["events.raw"], ["expire"], options=MaintenanceOptions(older_than=0, retain_last=1), progress=None)
    after = commit.committed_batch_ids(lh.events_table())
    hidden = [b for b in leftovers if b in in_history and b not in after]  # committed, no longer in the history
    with lh.writer(wal_dir=wal, max_age=60) as w:
        pass
    st = w.stats()
    acked = [line for f in acks.glob("ack-*") for line in f.read_text().split("\n") if line]
    rows = lh.query("SELECT payload::JSON->>'key' AS k, count(*) AS n FROM events GROUP BY 1").to_pylist()
    present = {r["k"]: r["n"] for r in rows}
    return {
        "kills": len(modes),
        "acknowledged": len(acked),
        "present": sum(present.values()),
        "lost": sum(1 for k in acked if k not in present),
        "duplicated": sum(n - 1 for n in present.values() if n > 1),
        "unacknowledged_present": sum(1 for k in present if k not in set(acked)),
        "snapshots_before_expiry": snapshots_before,
        "snapshots_after_expiry": len(lh.events_table().metadata.snapshots) - st.commits,
        "leftover_batches": len(leftovers),
        "committed_but_expired_from_history": len(hidden),
        "replayed": st.replayed_batches,
        "skipped_as_committed": st.skipped_batches,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("local", "s3pg"), default="local")
    ap.add_argument("--rounds", type=int, default=6, help="SIGKILLs (default 6)")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="icebergdo-exactly-once-"))
    s3 = pg = None
    try:
        if args.backend == "s3pg":
            from tests import servers

            s3, pg = servers.start_seaweedfs(work / "s3"), servers.start_postgres(work / "pg")
            bucket = s3.create_bucket("exactly-once")
            config = Config.from_dict({"catalog": {"uri": pg.create_database("exactly_once"), "warehouse": f"s3://{bucket}/lake"},
                                       "s3": s3.s3_settings()})
        else:
            config = Config.from_home(work / "home")
        r = run(config, work, args.rounds, args.seed)
    finally:
        if s3 is not None:
            s3.stop()
        if pg is not None:
            pg.stop()
    print(f"backend {args.backend}: {r['kills']} SIGKILLs (random / before a commit / after 3 commits whose WAL segments were kept), "
          f"then every snapshot but the last expired ({r['snapshots_before_expiry']} -> {r['snapshots_after_expiry']}), then a restart")
    for k, v in r.items():
        print(f"  {k:36} {v:,}")
    ok = r["lost"] == 0 and r["duplicated"] == 0 and r["acknowledged"] > 0
    print("OK: 0 lost, 0 duplicated" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
