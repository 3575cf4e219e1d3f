"""Compaction racing real writers in other processes: event appends and CDC applies.

Nothing lost, nothing duplicated: every appended event id is read back exactly once through
DuckDB, the CDC log holds every change once, and the CDC state equals the last write per key.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from icebergdo import Lakehouse
from icebergdo.config import Config
from icebergdo.maintenance.common import table_prefixes
from icebergdo.maintenance.compact import compact
from icebergdo.maintenance.manifests import rewrite_manifests
from icebergdo.maintenance.reachable import reachable
from icebergdo.store import Store, normalise
from tests.integration import procs

T0 = datetime(2026, 1, 1, tzinfo=UTC)
APPENDS = 14
APPLIES = 6
KEYS = 6


def _event_writer(config: Config, start: object, out: object) -> None:
    try:
        lh = Lakehouse.open(config)
        start.wait(60)  # type: ignore[attr-defined]
        for i in range(APPENDS):
            lh.append_events([{"id": f"w-{i}-{j}", "type": "webhook", "ts": T0 + timedelta(hours=i % 2, seconds=i)} for j in range(2)])
        out.put(("events", "ok"))  # type: ignore[attr-defined]
    except BaseException as e:  # noqa: BLE001 - report, don't hang the parent
        out.put(("events", repr(e)))  # type: ignore[attr-defined]


def _cdc_writer(config: Config, start: object, out: object) -> None:
    try:
        lh = Lakehouse.open(config)
        coll = lh.collection("shop", "orders", key=["id"])
        start.wait(60)  # type: ignore[attr-defined]
        for b in range(1, APPLIES + 1):
            coll.apply(
                [{"op": "update", "ts": T0 + timedelta(minutes=b), "seq": b, "id": f"k{k}", "v": b} for k in range(KEYS)]
            )
        out.put(("cdc", "ok"))  # type: ignore[attr-defined]
    except BaseException as e:  # noqa: BLE001
        out.put(("cdc", repr(e)))  # type: ignore[attr-defined]


@pytest.mark.slow
def test_compaction_concurrent_with_appends_and_cdc(lh: Lakehouse, config: Config) -> None:
    # Seed: small files in both hour partitions, and a CDC collection with a few applies.
    for i in range(6):
        lh.append_events([{"id": f"seed-{i}", "type": "webhook", "ts": T0 + timedelta(hours=i % 2, minutes=30)}])
    coll = lh.collection("shop", "orders", key=["id"])
    coll.apply([{"op": "insert", "ts": T0, "seq": 0, "id": f"k{k}", "v": 0} for k in range(KEYS)])
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=f, args=(config, start, out)) for f in (_event_writer, _cdc_writer)]
    for p in procs:
        p.start()
    start.set()
    store = Store(lh.config)
    results: list[tuple[str, str]] = []
    compactions = 0
    tables = ["events.raw", "shop.orders__deltas", "shop.orders"]
    while len(results) < len(procs):
        for name in tables:
            r = compact(lh.table(name), store=store, min_input_files=2, reload=lambda n=name: lh.table(n))
            compactions += r.snapshot_id is not None
        rewrite_manifests(lh.table("events.raw"))
        while not out.empty():
            results.append(out.get())
    for p in procs:
        p.join(60)
    assert all(r[1] == "ok" for r in results), results
    for name in tables:  # and once more after the writers are done
        compact(lh.table(name), store=store, min_input_files=2)
    assert compactions >= 1

    # Events: every id exactly once.
    ids = lh.query("SELECT id FROM events").column("id").to_pylist()
    expected = {f"seed-{i}" for i in range(6)} | {f"w-{i}-{j}" for i in range(APPENDS) for j in range(2)}
    assert len(ids) == len(expected) and set(ids) == expected
    events = lh.table("events.raw")
    ops = [s.summary.operation.value for s in events.snapshots()]
    first_replace = ops.index("replace")
    assert "append" in ops[first_replace:]  # writer appends landed after a compaction committed...
    assert ops[:first_replace].count("append") > 6 or ops.count("replace") > 1  # ...and while it ran
    assert len(list(events.scan().plan_files())) <= 2 + 2  # ...and the files were compacted

    # CDC: the log has every change once; the state is the last write per key.
    con = lh.duckdb()
    log_rows = con.execute('SELECT count(*), count(DISTINCT _id) FROM shop."orders__deltas"').fetchone()
    assert log_rows == (KEYS * (APPLIES + 1), KEYS * (APPLIES + 1))
    state = con.execute('SELECT id, v FROM shop.orders ORDER BY id').fetchall()
    assert state == [(f"k{k}", APPLIES) for k in range(KEYS)]
    assert coll.read().num_rows == KEYS


def missing_references(lh: Lakehouse, name: str) -> list[str]:
    """Files the table's current metadata references (every snapshot, the metadata log) that are gone."""
    table = lh.table(name)
    refs = reachable(table.metadata, table.io, metadata_location=table.metadata_location).all()
    present = {f.path for f in Store(lh.config).list(table.metadata.location)} | {
        f.path for p in table_prefixes(table).all() for f in Store(lh.config).list(p)
    }
    return sorted(r for r in refs if r not in present)


ORPHAN_RACE_SECONDS = 24


@pytest.mark.slow
def test_orphans_at_age_zero_never_break_concurrent_writers(lh: Lakehouse, config: Config, tmp_path: Path) -> None:
    """Issue 14.1: three durable writers commit in a loop while `maintain --orphans --orphan-age 0s
    --unsafe-orphan-age` runs round after round; the table stays readable and nothing acknowledged is lost."""
    cfg = procs.write_config(config, tmp_path / "lake.toml")
    lh.append_events([{"id": "seed", "ts": T0, "type": "webhook"}])  # events.raw exists before the children race to create it
    stop = tmp_path / "stop"
    strays: list[tuple[float, str]] = []
    writers = [
        procs.start_writer(cfg, tmp_path / f"wal{k}", tmp_path / f"acks{k}", stop, f"w{k}", upkeep=False) for k in range(3)
    ]
    maint = None
    try:
        for k, w in enumerate(writers):
            procs.wait_for(tmp_path / f"acks{k}.started", w)
        maint = procs.icebergdo(cfg, "maintain", "--orphans", "--orphan-age", "0s", "--unsafe-orphan-age", "--every", "100ms", "--wait", "30s",
                                "--format", "jsonl", "--quiet")
        # Meanwhile, leftovers of "failed commits" appear: real orphans the rounds must delete.
        manifests = table_prefixes(lh.table("events.raw")).manifests
        io = lh.table("events.raw").io
        deadline = time.monotonic() + ORPHAN_RACE_SECONDS
        while time.monotonic() < deadline:
            stray = f"{manifests}/{uuid.uuid4()}-m0.avro"
            with io.new_output(stray).create(overwrite=True) as out:
                out.write(b"a manifest whose commit failed")
            strays.append((time.monotonic(), normalise(stray)))
            time.sleep(0.5)
        maint.send_signal(signal.SIGINT)  # between or inside a round: both must be safe
        out, err = maint.communicate(timeout=60)
        stop.touch()
        outcomes = [w.communicate(timeout=120) for w in writers]
    finally:
        for p in [*writers, *([maint] if maint else [])]:
            procs.kill(p)
    rounds_out = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    orphan_rounds = [r for r in rounds_out if r["step"] == "orphans"]
    deleted = sum(r["files_in"] for r in orphan_rounds)
    rounds = len(orphan_rounds)
    stderr = err.decode()
    for k, (out, werr) in enumerate(outcomes):
        assert writers[k].returncode == 0 and b"closed" in out, f"writer {k} failed: {werr.decode()[-3000:]}"
    print(f"orphan race: {rounds} rounds at age 0 deleted {deleted} file(s) while 3 writers committed")
    assert rounds >= 5, f"too few orphan rounds ran ({rounds}): {stderr[-2000:]}"
    assert deleted > 0, "the orphan rounds deleted nothing: the race was not exercised"
    # One more round, now that nothing writes, finds every leftover the race left.
    final = subprocess.run([*procs.ICEBERGDO, "--config", str(cfg), "maintain", "--orphans", "--orphan-age", "0s", "--unsafe-orphan-age",
                            "--wait", "2m", "--format", "jsonl", "--quiet"], capture_output=True, env=procs.env(), timeout=300)
    assert final.returncode == 0, final.stderr.decode()[-3000:]
    on_disk = {f.path for f in Store(lh.config).list(manifests)}
    assert strays and not {p for _t, p in strays} & on_disk, "orphans survived the rounds"

    assert missing_references(lh, "events.raw") == []
    acked = procs.acked([tmp_path / f"acks{k}" for k in range(3)])
    assert len(acked) > 300
    total, distinct = lh.duckdb().execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()
    ids = set(lh.query("SELECT id FROM events").column("id").to_pylist())
    assert total == distinct
    assert not acked - ids, f"{len(acked - ids)} acknowledged events lost"
    assert lh.table("events.raw").scan().to_arrow().num_rows == total  # pyiceberg reads every file too
