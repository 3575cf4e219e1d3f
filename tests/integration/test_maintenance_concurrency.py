"""Compaction racing real writers in other processes: event appends and CDC applies.

Nothing lost, nothing duplicated: every appended event id is read back exactly once through
DuckDB, the CDC log holds every change once, and the CDC state equals the last write per key.
"""

from __future__ import annotations

import multiprocessing as mp
from datetime import UTC, datetime, timedelta

import pytest

from icebergdo import Lakehouse
from icebergdo.config import Config
from icebergdo.maintenance.compact import compact
from icebergdo.maintenance.manifests import rewrite_manifests
from icebergdo.store import Store

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
