"""Default write-ahead-log folders are per writer: concurrent writers and `icebergdo ingest` runs on one
machine never collide, and a later writer adopts and replays what a killed one left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from icebergdo import Config, Lakehouse
from icebergdo.wal import has_segments, writer_folders
from icebergdo.writer import default_wal_dir
from tests.integration.procs import cli_args

REPO = Path(__file__).resolve().parents[2]
# `icebergdo ingest --stream` whose commits never happen: killed once everything it read is in its WAL.
STALLED = r"""
import sys, time
from icebergdo.tables import Tables
marker = sys.argv[1]
def stalled(self, *a, **k):
    open(marker, "w").close()
    time.sleep(600)
Tables.append = stalled
from icebergdo.cli import main
sys.exit(main(sys.argv[2:]))
"""


def jsonl(path: Path, prefix: str, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"{prefix}-{i}", "ts": 1772359200000 + i * 997, "type": "webhook",
                                        "payload": {"i": i}}) + "\n" for i in range(n)))
    return path


def test_two_default_writers_get_their_own_folders(lh: Lakehouse, monkeypatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(Path(lh.config.home or "/nonexistent").parent / "state"))
    a = lh.writer(durable=True, max_age=60)
    b = lh.writer(durable=True, max_age=60)
    try:
        assert a.stats().wal_dir != b.stats().wal_dir and a.writer_id != b.writer_id
        a.extend([{"id": f"a-{i}", "ts": 1772359200000 + i, "type": "x"} for i in range(20)])
        b.extend([{"id": f"b-{i}", "ts": 1772359200000 + i, "type": "x"} for i in range(30)])
    finally:
        a.close()
        b.close()
    assert lh.query("SELECT count(*) AS n, count(DISTINCT id) AS d FROM events").to_pylist() == [{"n": 50, "d": 50}]
    root = default_wal_dir(lh, "events.raw")
    folders = writer_folders(root)
    assert len(folders) == 2 and not any(has_segments(f) for f in folders)
    for f in folders:
        assert oct(f.stat().st_mode & 0o777) == oct(0o700)
    with lh.writer(durable=True, max_age=60) as c:  # a third, later writer reuses a free folder
        c.append({"id": "c-0", "ts": 1772359200000, "type": "x"})
    assert c.stats().wal_dir in {str(f) for f in folders} and len(writer_folders(root)) == 2


def test_concurrent_ingests_one_killed_then_replayed(lh: Lakehouse, config: Config, tmp_path: Path) -> None:
    """4 concurrent `icebergdo ingest --stream` runs (the mode that goes through the durable writer) of
    disjoint files with the default WAL; one is SIGKILLed after acknowledging all its lines; a later
    `ingest` adopts its folder: count = distinct = every line."""
    args = cli_args(config, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_STATE_HOME": str(tmp_path / "state")}
    files = [jsonl(tmp_path / f"f{k}.jsonl", f"f{k}", 300) for k in range(4)]
    later = jsonl(tmp_path / "later.jsonl", "later", 100)
    lh.events_table()
    marker = tmp_path / "stalled"
    icebergdo = [sys.executable, "-m", "icebergdo"]
    killed = subprocess.Popen([sys.executable, "-c", STALLED, str(marker), *args, "ingest", "--stream", str(files[0]), "--no-progress"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    others = [subprocess.Popen([*icebergdo, *args, "ingest", "--stream", str(f), "--no-progress"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for f in files[1:]]
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():  # its first commit started: every line was acknowledged (in its WAL)
            assert killed.poll() is None, killed.stderr.read().decode()[-2000:] if killed.stderr else ""
            assert time.monotonic() < deadline, "the stalled ingest never reached its commit"
            time.sleep(0.05)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        if killed.stderr:
            killed.stderr.close()
    outputs = []
    for p in others:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
        outputs.append(out.decode())
    done = subprocess.run([*icebergdo, *args, "ingest", "--stream", str(later), "--no-progress"], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    outputs.append(done.stdout.decode())
    # Whichever ingest started after the kill adopted the killed one's folder (usually the later one;
    # a slow-starting concurrent one may be first): its 300 lines were committed exactly once.
    ingested = [int(re.search(r"ingested ([\d,]+) events", o).group(1).replace(",", "")) for o in outputs]  # type: ignore[union-attr]
    assert sum(ingested) == 3 * 300 + 100 + 300
    assert sum(o.count("1 batch(es) replayed") for o in outputs) == 1

    total, distinct = lh.duckdb().execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()
    writers = [(s.summary.additional_properties.get("icebergdo.writer-id"), s.summary.additional_properties.get("icebergdo.writer-seq"),
                s.summary.additional_properties.get("added-records")) for s in lh.events_table().metadata.snapshots]
    assert total == distinct == 4 * 300 + 100, (outputs, writers)
    wal_root = Path(config.home) / "wal" if config.home else next((tmp_path / "state" / "icebergdo" / "wal").iterdir())
    folders = writer_folders(wal_root / "events.raw")
    assert 2 <= len(folders) <= 4 and not any(has_segments(f) for f in folders)  # nothing stranded
