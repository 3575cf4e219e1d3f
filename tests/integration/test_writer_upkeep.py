"""Streaming-table defaults and the writer's own upkeep, on both backends: new and existing tables get
the defaults (never overriding a user's value), upkeep bounds snapshots, manifests and small files of
closed hours without an external scheduler, can be opted out of, skips a busy table at once, and
never expires a snapshot whose CDC events still wait to be routed."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from icebergdo import Lakehouse
from icebergdo.maintenance.lock import TableLock
from icebergdo.schema import EVENT_PARTITION_SPEC, EVENT_SCHEMA, EVENT_SORT_ORDER
from icebergdo.tables import (
    MAX_SNAPSHOTS_PROPERTY,
    STREAMING_TABLE_PROPERTIES,
    UPKEEP_ENABLED_PROPERTY,
    UPKEEP_EVERY_COMMITS_PROPERTY,
)

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)  # long closed hours


def batch(c: int, n: int = 12, hours: int = 3) -> list[dict]:
    """n events over `hours` hours, out of order, no ids."""
    return [{"ts": (T0 + timedelta(hours=(c + i) % hours, seconds=(i * 7919 + c * 104729) % 3600)).isoformat(),
             "type": "webhook", "payload": {"c": c, "i": i}} for i in range(n)]


def set_props(lh: Lakehouse, props: dict[str, str]) -> None:
    with lh.events_table().transaction() as tx:
        tx.set_properties(props)


def total(lh: Lakehouse) -> int:
    return lh.query("SELECT count(*) AS n FROM events").to_pylist()[0]["n"]


def test_new_and_existing_tables_get_streaming_defaults_without_overriding(lh: Lakehouse) -> None:
    props = lh.events_table().metadata.properties
    assert all(props.get(k) == v for k, v in STREAMING_TABLE_PROPERTIES.items())

    # A table made by a previous version: no streaming defaults, one value set by its user.
    lh.catalog.drop_table("events.raw")
    lh.create_table("events.raw", EVENT_SCHEMA, data_path="events", partition_spec=EVENT_PARTITION_SPEC,
                    sort_order=EVENT_SORT_ORDER, properties={"history.expire.max-snapshot-age-ms": "86400000"})
    fresh = Lakehouse.open(lh.config)  # another process: its first write checks the defaults
    assert MAX_SNAPSHOTS_PROPERTY not in fresh.events_table().metadata.properties
    fresh.append_events(batch(0))
    props = fresh.events_table().metadata.properties
    assert props["history.expire.max-snapshot-age-ms"] == "86400000"  # the user's value stays
    assert all(props.get(k) == v for k, v in STREAMING_TABLE_PROPERTIES.items() if k != "history.expire.max-snapshot-age-ms")

    # A table a writer feeds is a streaming table; `upkeep=False` leaves it as it is.
    schema = pa.schema([pa.field("k", pa.string()), pa.field("v", pa.int64())])
    lh.create_table("app.metrics", schema, data_path="app/metrics")
    lh.create_table("app.plain", schema, data_path="app/plain")
    with lh.writer("app.metrics", max_age=60) as w:
        w.append({"k": "a", "v": 1})
    with lh.writer("app.plain", max_age=60, upkeep=False) as w:
        w.append({"k": "a", "v": 1})
    assert lh.table("app.metrics").metadata.properties.get(UPKEEP_ENABLED_PROPERTY) == "true"
    assert UPKEEP_ENABLED_PROPERTY not in lh.table("app.plain").metadata.properties


def test_upkeep_keeps_snapshots_manifests_and_closed_hours_bounded(lh: Lakehouse) -> None:
    set_props(lh, {UPKEEP_EVERY_COMMITS_PROPERTY: "10", MAX_SNAPSHOTS_PROPERTY: "15", "history.expire.min-snapshots-to-keep": "5"})
    commits = 60
    for c in range(commits):
        lh.append_events(batch(c))
    assert lh.upkeep.wait_idle(300)
    up = lh.upkeep.stats()
    assert up.rounds >= 4 and up.failed == 0, up
    table = lh.events_table()
    snap = table.current_snapshot()
    assert snap is not None
    assert len(table.metadata.snapshots) <= 15 + 9 + 2  # the cap, the commits since the last round, its own snapshots
    assert len(snap.manifests(table.io)) <= 9 + 2  # merged each round; one new manifest per commit since
    files = sum(1 for _ in table.scan().plan_files())
    assert files <= 3 + 9 * 3  # closed hours rewritten to one file each; only the files since the last round are small
    assert len(table.metadata.metadata_log) <= int(STREAMING_TABLE_PROPERTIES["write.metadata.previous-versions-max"])
    row = lh.query("SELECT count(*) AS n, count(DISTINCT id) AS d, count(DISTINCT date_trunc('hour', ts)) AS h FROM events").to_pylist()[0]
    assert row == {"n": commits * 12, "d": commits * 12, "h": 3}  # nothing lost or doubled by compaction and expiry


def test_upkeep_opt_out_by_writer_option_and_by_table_property(lh: Lakehouse) -> None:
    set_props(lh, {UPKEEP_EVERY_COMMITS_PROPERTY: "3"})
    with lh.writer(max_age=60, upkeep=False) as w:
        for c in range(8):
            w.extend(batch(c))
            w.flush()
    assert lh.upkeep.wait_idle(60) and lh.upkeep.stats().rounds == 0
    set_props(lh, {UPKEEP_ENABLED_PROPERTY: "false"})
    for c in range(8):
        lh.append_events(batch(c))
    assert lh.upkeep.wait_idle(60) and lh.upkeep.stats().rounds == 0
    assert len(lh.events_table().metadata.snapshots) >= 16
    set_props(lh, {UPKEEP_ENABLED_PROPERTY: "true"})
    for c in range(3):
        lh.append_events(batch(c))
    assert lh.upkeep.wait_idle(120) and lh.upkeep.stats().rounds == 1


def test_upkeep_skips_a_table_another_maintainer_holds_without_waiting(lh: Lakehouse) -> None:
    for c in range(3):
        lh.append_events(batch(c))
    held = TableLock(lh.catalog_engine, lh.config.catalog_name, "events.raw")
    assert held.acquire()
    try:
        started = time.monotonic()
        reports = lh.upkeep.run("events.raw")
        assert time.monotonic() - started < 20
        assert [r.step for r in reports] == ["all"] and "skipped" in reports[0].notes[0]
        assert lh.upkeep.stats().skipped == 1
    finally:
        held.release()
    assert len(lh.events_table().metadata.snapshots) == 3


def test_upkeep_never_expires_a_snapshot_whose_cdc_events_wait(lh: Lakehouse) -> None:
    set_props(lh, {MAX_SNAPSHOTS_PROPERTY: "3", "history.expire.min-snapshots-to-keep": "1", UPKEEP_ENABLED_PROPERTY: "false"})
    lh.append_events(batch(0))
    waiting = lh.events_table().current_snapshot()
    assert waiting is not None
    for c in range(1, 8):
        lh.append_events(batch(c))
    # Recorded the way CDC routing records a failure (set after the appends: each successful routing retries them)
    set_props(lh, {f"icebergdo.cdc.unrouted.{waiting.snapshot_id}": '["app.users"]'})
    lh.upkeep.run("events.raw")
    ids = {s.snapshot_id for s in lh.events_table().metadata.snapshots}
    assert waiting.snapshot_id in ids
    with lh.events_table().transaction() as tx:
        tx.remove_properties(f"icebergdo.cdc.unrouted.{waiting.snapshot_id}")
    lh.upkeep.run("events.raw")
    snaps = lh.events_table().metadata.snapshots
    assert waiting.snapshot_id not in {s.snapshot_id for s in snaps} and len(snaps) <= 3 + 2
    assert total(lh) == 8 * 12
