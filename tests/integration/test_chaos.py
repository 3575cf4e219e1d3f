"""Chaos (issue 14, must-show): writers, `cdc apply` and `maintain` run at once and are SIGKILLed at random.

For a bounded time, in separate processes:
- two durable writers append events (each event acknowledged once `extend` returned: in the WAL);
- a CDC applier runs `icebergdo cdc apply shop orders FILE` over a sequence of change files, and
  re-runs a file whose run was killed, as an operator would;
- `icebergdo maintain` runs every job on every table round after round, at the smallest windows
  allowed without overrides (expire everything but the newest snapshot, orphans older than 1 h);
and a monkey SIGKILLs one of them at random every few seconds, then starts it again.

Afterwards (writers closed, killed writers' WALs replayed, every change file applied once with
exit 0, `cdc repair`), DuckDB and pyiceberg read everything, and:
- every acknowledged event is in events.raw exactly once;
- every change is in the change log exactly once, and the state equals the fold of the changes;
- no file any table's metadata references is missing.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from icebergdo import Lakehouse
from icebergdo.config import Config
from tests.integration import procs
from tests.integration.test_maintenance_concurrency import missing_references

CHAOS_SECONDS = 40
KEYS = 8
CHANGE_FILES = 400  # more than the chaos period can apply: the applier never runs dry
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def change_file(folder: Path, n: int) -> Path:
    """File n: one update per key, seq n (so the last file applied decides the state)."""
    path = folder / f"changes-{n:04d}.jsonl"
    if not path.exists():
        lines = [
            json.dumps({"op": "update", "ts": (T0 + timedelta(minutes=n)).isoformat(), "seq": n, "id": f"k{k}", "v": n * 100 + k})
            for k in range(KEYS)
        ]
        path.write_text("\n".join(lines) + "\n")
    return path


class Applier:
    """`cdc apply` of file 0, 1, 2, ...: a file whose run was killed is applied again."""

    def __init__(self, cfg: Path, folder: Path) -> None:
        self.cfg, self.folder = cfg, folder
        self.next = 0
        self.done: list[int] = []  # files applied with exit code 0
        self.killed_runs = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def poll(self) -> None:
        """Start the next run when none is going; account for the one that ended."""
        if self.proc is not None:
            rc = self.proc.poll()
            if rc is None:
                return
            out, err = self.proc.communicate()
            if rc == 0:
                self.done.append(self.next)
                self.next += 1
            elif rc < 0:
                self.killed_runs += 1  # re-run the same file
            else:
                raise AssertionError(f"cdc apply of file {self.next} failed ({rc}): {err.decode()[-3000:]}")
            self.proc = None
        if self.next < CHANGE_FILES:
            self.proc = procs.icebergdo(self.cfg, "cdc", "apply", "shop", "orders", str(change_file(self.folder, self.next)))

    def finish(self) -> None:
        """Let the run in flight end (re-running its file if it was killed); start no further file."""
        while self.proc is not None:
            self.proc.wait(timeout=300)
            rc = self.proc.returncode
            if rc < 0:
                self.killed_runs += 1
                self.proc = procs.icebergdo(self.cfg, "cdc", "apply", "shop", "orders", str(change_file(self.folder, self.next)))
                continue
            _, err = self.proc.communicate()
            assert rc == 0, f"cdc apply of file {self.next} failed ({rc}): {err.decode()[-3000:]}"
            self.done.append(self.next)
            self.next += 1
            self.proc = None


def _start_maintain(cfg: Path) -> subprocess.Popen[bytes]:
    return procs.icebergdo(
        cfg, "maintain", "--every", "1s", "--older-than", "0s", "--retain-last", "1", "--orphan-age", "1h",
        "--min-input-files", "2", "--wait", "20s",
    )


@pytest.mark.slow
def test_chaos_writers_cdc_and_maintenance_under_sigkill(lh: Lakehouse, config: Config, tmp_path: Path) -> None:
    rng = random.Random(14)
    cfg = procs.write_config(config, tmp_path / "lake.toml", {"retention": {"events.raw": "3650d", "shop.orders__deltas": "3650d"}})
    lh.append_events([{"id": "seed", "ts": T0, "type": "webhook"}])
    lh.collection("shop", "orders", key=["id"]).apply([{"op": "insert", "ts": T0, "seq": -1, "id": f"k{k}", "v": -1} for k in range(KEYS)])
    stop = tmp_path / "stop"
    wals = [tmp_path / f"wal{w}" for w in range(2)]
    ack_files: list[Path] = []
    incarnation = 0

    def start_writer(w: int) -> subprocess.Popen[bytes]:
        nonlocal incarnation
        incarnation += 1
        acks = tmp_path / f"acks-{w}-{incarnation}"
        ack_files.append(acks)
        return procs.start_writer(cfg, wals[w], acks, stop, f"w{w}i{incarnation}", hours=6)

    writers = [start_writer(w) for w in range(2)]
    applier = Applier(cfg, tmp_path)
    maint = _start_maintain(cfg)
    kills = {"writer": 0, "cdc": 0, "maintain": 0}
    errors: list[str] = []
    try:
        deadline = time.monotonic() + CHAOS_SECONDS
        next_kill = time.monotonic() + rng.uniform(2, 5)
        while time.monotonic() < deadline:
            applier.poll()
            for w, p in enumerate(writers):
                if p.poll() is not None:  # a writer must only end when killed
                    errors.append(f"writer {w} exited {p.returncode}: {p.stderr.read().decode()[-2000:] if p.stderr else ''}")
                    writers[w] = start_writer(w)
            if maint.poll() is not None and maint.returncode >= 0:
                errors.append(f"maintain exited {maint.returncode}: {maint.stderr.read().decode()[-3000:] if maint.stderr else ''}")
                maint = _start_maintain(cfg)
            if time.monotonic() >= next_kill:
                victim = rng.choice(["writer", "writer", "cdc", "maintain"])
                if victim == "writer":
                    w = rng.randrange(len(writers))
                    procs.kill(writers[w])
                    writers[w] = start_writer(w)  # same WAL folder: replays what the killed one left
                elif victim == "cdc" and applier.proc is not None:
                    procs.kill(applier.proc)
                else:
                    procs.kill(maint)
                    maint = _start_maintain(cfg)
                kills[victim] += 1
                next_kill = time.monotonic() + rng.uniform(2, 5)
            time.sleep(0.05)
        # Wind down: maintenance stops, writers close cleanly, the applier finishes its current file.
        procs.kill(maint)
        stop.touch()
        for w, p in enumerate(writers):
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0 and b"closed" in out, f"writer {w} did not close cleanly: {err.decode()[-3000:]}"
        applier.finish()
    finally:
        for p in [*writers, maint, *([applier.proc] if applier.proc else [])]:
            procs.kill(p)
    assert not errors, errors
    print(f"chaos: {CHAOS_SECONDS}s, SIGKILLs {kills}, change files applied {len(applier.done)} (re-runs after a kill: {applier.killed_runs})")
    assert kills["writer"] >= 2 and kills["maintain"] + kills["cdc"] >= 2, kills

    # Recovery a user would run: replay the WAL folders (the CDC file in flight was re-run above), repair.
    for wal in wals:
        with lh.writer(wal_dir=wal, max_age=60):
            pass
    repair = subprocess.run([*procs.ICEBERGDO, "--config", str(cfg), "cdc", "repair", "shop", "orders"], capture_output=True, env=procs.env(), timeout=300)
    assert repair.returncode == 0, repair.stderr.decode()[-3000:]
    assert len(applier.done) >= 3, f"too few change files applied: {applier.done}"

    con = lh.duckdb()
    # Events: every acknowledged one exactly once.
    acked = procs.acked(ack_files)
    assert len(acked) > 500
    print(f"chaos: {len(acked)} events acknowledged by {len(ack_files)} writer processes")
    total, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()
    assert total == distinct, f"{total - distinct} events committed twice"
    ids = {r[0] for r in con.execute("SELECT id FROM events").fetchall()}
    assert not acked - ids, f"{len(acked - ids)} acknowledged events lost, e.g. {sorted(acked - ids)[:5]}"
    assert lh.table("events.raw").scan().to_arrow().num_rows == total
    # CDC: every change once; the state is the fold (the highest seq per key wins).
    applied = sorted(set(applier.done))
    assert applied == list(range(len(applied))), f"change files applied out of order or twice: {applier.done}"
    log = con.execute('SELECT id, _seq, v FROM shop."orders__deltas" WHERE _seq >= 0').fetchall()
    expected_log = {(f"k{k}", n, n * 100 + k) for n in applied for k in range(KEYS)}
    assert len(log) == len(set(log)), f"{len(log) - len(set(log))} changes logged twice"
    assert set(log) == expected_log
    last = applied[-1]
    state = con.execute("SELECT id, v FROM shop.orders ORDER BY id").fetchall()
    assert state == [(f"k{k}", last * 100 + k) for k in range(KEYS)]
    # Nothing any table references is missing.
    for name in ("events.raw", "shop.orders__deltas", "shop.orders"):
        assert missing_references(lh, name) == [], name
