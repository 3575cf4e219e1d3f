"""Table maintenance on both backends: compaction, expiry, retention, orphans, manifests, locks, CLI.

Row content is always compared through DuckDB (an independent Iceberg reader), not only counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.table.snapshots import Operation

from icebergdo import Lakehouse, layout
from icebergdo.cli import main as cli_main
from icebergdo.errors import BadInputError, IcebergdoError, LockBusyError, UnsafeOperationError
from icebergdo.maintenance import MaintenanceOptions, health, maintain, plan
from icebergdo.maintenance.common import table_prefixes
from icebergdo.maintenance.compact import compact
from icebergdo.maintenance.expire import expire
from icebergdo.maintenance.lock import TableLock, table_lock
from icebergdo.maintenance.manifests import rewrite_manifests
from icebergdo.maintenance.orphans import UnsafePrefixError, remove_orphans
from icebergdo.maintenance.reachable import reachable
from icebergdo.store import Store, normalise
from tests.integration import procs

pytestmark = pytest.mark.rest_backend  # also on the `rest` backend (tests/conftest.py)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALL = "SELECT id, ts, type, source, namespace, collection, payload, ingested_at FROM events ORDER BY id"


def events(i: int, n: int = 2, base: datetime = T0, spacing_s: int = 0) -> list[dict]:
    return [{"type": "webhook", "ts": base + timedelta(seconds=spacing_s * i + j), "payload": {"i": i, "j": j}} for j in range(n)]


def listing(lh: Lakehouse) -> dict[str, int]:
    """Every file of the warehouse but the lease register's (the `rest` backend keeps maintenance leases in a table)."""
    system = layout.SYSTEM_NAMESPACE
    return {f.path: f.size for f in Store(lh.config).list(lh.config.warehouse) if f"/{system}/" not in f.path and f"/{system}." not in f.path}


def referenced(lh: Lakehouse, name: str = "events.raw", live_only: bool = False) -> set[str]:
    t = lh.table(name)
    return reachable(t.metadata, t.io, metadata_location=t.metadata_location, live_only=live_only).all()


def expire_history(lh: Lakehouse) -> None:
    """What a scheduled maintainer does between appends: keeps pyiceberg's per-commit cost flat."""
    expire(lh.table("events.raw"), store=Store(lh.config), older_than=datetime.now(UTC) + timedelta(seconds=1), retain_last=1)


@pytest.mark.slow
def test_compaction_after_many_small_appends(lh: Lakehouse, backend: str) -> None:
    # 500 one-commit appends locally; 100 on s3pg, where each commit costs ~6 S3 requests plus a
    # PostgreSQL round trip: 500 would take minutes there and exercise nothing the local run does not.
    appends = 500 if backend == "local" else 100
    lh.upkeep.enabled = False  # this test drives compaction itself: no post-commit upkeep rounds (docs/writer.md)
    for i in range(appends):
        # 3 hour partitions, interleaved, so every partition gets many tiny files.
        lh.append_events(events(i, 2, base=T0 + timedelta(hours=i % 3), spacing_s=5))
        if (i + 1) % 50 == 0:
            expire_history(lh)  # metadata stays small; the data files all stay live
    before = lh.query(ALL)
    table = lh.table("events.raw")
    assert len(list(table.scan().plan_files())) == appends

    report = compact(table, store=Store(lh.config))

    after = lh.query(ALL)
    assert after.num_rows == 2 * appends
    assert after.equals(before)  # identical content, not just counts
    table = lh.table("events.raw")
    files = list(table.scan().plan_files())
    partitions = {f.file.partition for f in files}
    assert len(partitions) == 3 and len(files) == 3  # one file per partition-hour
    assert all("/_compact-" in f.file.file_path for f in files)
    assert sorted(f.file.file_path.split("/events/")[1][:13] for f in files) == ["2026/01/01/00", "2026/01/01/01", "2026/01/01/02"]
    snap = table.current_snapshot()
    assert snap.summary.operation == Operation.REPLACE
    s = snap.summary
    assert int(s["deleted-data-files"]) == appends == report.files_in
    assert int(s["added-data-files"]) == 3 == report.files_out
    assert int(s["added-records"]) == int(s["deleted-records"]) == 2 * appends
    assert int(s["total-records"]) == 2 * appends and int(s["total-data-files"]) == 3
    # Sorted by ts inside each output file.
    for f in files:
        with table.io.new_input(f.file.file_path).open() as stream:
            ts = pq.read_table(stream, columns=["ts"]).column("ts")
        assert pc.all(pc.greater_equal(ts[1:], ts[:-1])).as_py()


def test_compaction_thresholds_and_dry_run(lh: Lakehouse) -> None:
    for i in range(4):
        lh.append_events(events(i))
    table = lh.table("events.raw")
    assert compact(table, store=Store(lh.config)).files_in == 0  # 4 < min-input-files (5)
    lh.append_events(events(4))
    snapshots = len(lh.table("events.raw").metadata.snapshots)
    dry = compact(lh.table("events.raw"), store=Store(lh.config), dry_run=True)
    assert dry.files_in == 5 and dry.files_out == 1
    assert len(lh.table("events.raw").metadata.snapshots) == snapshots  # dry run changed nothing
    # A file at/above 75 % of the target is not small: with a tiny target nothing qualifies.
    assert compact(lh.table("events.raw"), store=Store(lh.config), target_size=100).files_in == 0


def test_rollup_merges_old_partitions_whole(lh: Lakehouse) -> None:
    for i in range(3):  # 3 files in an old hour: below min-input-files, but rollup merges it
        lh.append_events(events(i, base=T0))
    before = lh.query(ALL)
    r = compact(lh.table("events.raw"), store=Store(lh.config), rollup_after=86400)
    assert r.files_in == 3 and r.files_out == 1 and r.details["rollup_groups"] == 1
    assert lh.query(ALL).equals(before)


def test_compaction_drops_group_whose_input_was_removed_concurrently(lh: Lakehouse, config) -> None:
    hour_a, hour_b = T0, T0 + timedelta(hours=1)
    for i in range(5):
        lh.append_events(events(i, base=hour_a))
        lh.append_events(events(i, base=hour_b))
    other = Lakehouse.open(config)  # a second writer, as another process would be
    fired = []

    def progress(msg: str) -> None:
        # After compaction wrote its outputs and before it commits: delete hour A for real.
        if "compact group 2/2" in msg and not fired:
            other.table("events.raw").delete(f"ts < '{hour_b.isoformat()}'")
            other.append_events(events(99, base=hour_b))  # and an append that must survive
            fired.append(True)

    report = compact(lh.table("events.raw"), store=Store(lh.config), progress=progress)
    assert fired and report.details["aborted_groups"] == 1 and report.files_in == 5
    rows = lh.query("SELECT ts FROM events")
    ts = rows.column("ts").to_pylist()
    assert all(t >= hour_b for t in ts)  # hour A stays deleted: compaction did not resurrect it
    assert len(ts) == 12  # hour B: 5 appends x 2 rows + the concurrent append's 2 rows
    table = lh.table("events.raw")
    live = {normalise(t.file.file_path) for t in table.scan().plan_files()}
    on_disk = listing(lh)
    compact_files = [p for p in on_disk if "/_compact-" in p]
    assert all(p in live for p in compact_files)  # the aborted group's outputs were deleted


def test_expiry_frees_storage_keeps_retained_and_tagged(lh: Lakehouse) -> None:
    for i in range(6):
        lh.append_events(events(i, base=T0 + timedelta(hours=i % 2)))
    table = lh.table("events.raw")
    snaps = [s.snapshot_id for s in table.snapshots()]
    tagged = snaps[1]
    table.manage_snapshots().create_tag(tagged, "audit").commit()
    files_at_tag = {normalise(t.file.file_path) for t in lh.table("events.raw").scan(snapshot_id=tagged).plan_files()}
    compact(lh.table("events.raw"), store=Store(lh.config), min_input_files=2)
    table = lh.table("events.raw")
    retained = table.current_snapshot().snapshot_id
    expired_candidates = [s for s in snaps if s != tagged]
    before_files = listing(lh)
    before_refs = referenced(lh, live_only=True)

    report = expire(lh.table("events.raw"), store=Store(lh.config), older_than=datetime.now(UTC) + timedelta(seconds=1), retain_last=1)

    table = lh.table("events.raw")
    remaining = {s.snapshot_id for s in table.snapshots()}
    assert remaining == {retained, tagged}
    assert report.details["snapshots_expired"] == len(expired_candidates)
    after_files = listing(lh)
    after_refs = referenced(lh, live_only=True)
    gone = set(before_files) - set(after_files)
    assert gone and report.files_in == len(gone)
    assert gone.isdisjoint(after_refs), sorted(gone & after_refs)  # nothing still referenced was deleted
    assert after_refs <= set(after_files) | {normalise(table.metadata_location)}  # every reference resolves
    # Data files only the expired snapshots used are gone; the tag's files are all still there.
    expired_only = {p for p in before_refs if "/events/20" in p} - after_refs
    assert expired_only and expired_only.isdisjoint(after_files)
    assert files_at_tag <= set(after_files)
    # Time travel: retained and tagged snapshots read fine through DuckDB; an expired one fails clearly.
    con = lh.duckdb()
    loc = table.metadata_location
    assert con.execute(f"SELECT count(*) FROM iceberg_scan('{loc}', snapshot_from_id={retained})").fetchone()[0] == 12
    assert con.execute(f"SELECT count(*) FROM iceberg_scan('{loc}', snapshot_from_id={tagged})").fetchone()[0] == 4
    with pytest.raises(Exception, match=r"(?i)snapshot"):
        con.execute(f"SELECT count(*) FROM iceberg_scan('{loc}', snapshot_from_id={expired_candidates[0]})").fetchone()
    with pytest.raises(ValueError, match="Snapshot not found"):
        table.scan(snapshot_id=expired_candidates[0]).to_arrow()
    # The version hint is never deleted.
    assert any(p.endswith("/metadata/version-hint.text") for p in after_files)


def test_expiry_defaults_keep_recent_history(lh: Lakehouse) -> None:
    for i in range(3):
        lh.append_events(events(i))
    # Default max age is 5 days: nothing this recent expires, and nothing is deleted.
    before = listing(lh)
    r = expire(lh.table("events.raw"), store=Store(lh.config))
    assert r.details["snapshots_expired"] == 0 and listing(lh) == before
    # retain_last keeps the newest N even when older_than would take them.
    r = expire(lh.table("events.raw"), store=Store(lh.config), older_than=datetime.now(UTC) + timedelta(seconds=1), retain_last=2)
    assert r.details["snapshots_expired"] == 1 and len(lh.table("events.raw").metadata.snapshots) == 2


def test_retention_drops_exactly_old_partitions(lh: Lakehouse, config) -> None:
    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    for h in range(0, 72, 6):  # one batch every 6 hours over the last 3 days
        lh.append_events(events(h, n=3, base=now - timedelta(hours=h)))
    cfg = dataclasses.replace(config, sections={**config.sections, "retention": {"events.raw": "25h"}})
    lh2 = Lakehouse.open(cfg)
    cutoff = (now - timedelta(hours=25)).replace(minute=0)  # hour boundary
    expected = lh.query(f"SELECT id FROM events WHERE ts >= '{cutoff.isoformat()}' ORDER BY id")
    assert 0 < expected.num_rows < 36

    reports = maintain(lh2, ["events.raw"], ["retention"], progress=None)

    (r,) = reports
    assert r.details["cutoff"] == cutoff.isoformat()
    got = lh.query("SELECT id FROM events ORDER BY id")
    assert got.equals(expected)
    snap = lh.table("events.raw").current_snapshot()
    assert snap.summary.operation == Operation.DELETE
    assert "added-data-files" not in snap.summary.additional_properties  # metadata-only: no rewrite
    assert int(snap.summary["deleted-data-files"]) == r.files_in
    # A CDC current-state table is refused.
    lh.create_table("shop.orders", pa.schema([pa.field("k", pa.string()), pa.field("ts", pa.timestamp("us", tz="UTC"))]),
                    data_path=layout.collection_data_path("shop", "orders", "data"))
    cfg3 = dataclasses.replace(config, sections={"retention": {"shop.orders": "30d"}})
    with pytest.raises(BadInputError, match="CDC current-state"):
        maintain(Lakehouse.open(cfg3), ["shop.orders"], ["retention"], progress=None)
    cfg4 = dataclasses.replace(config, sections={"retention": {"events.raw": "soon"}})
    with pytest.raises(IcebergdoError, match="events.raw"):
        maintain(Lakehouse.open(cfg4), ["events.raw"], ["retention"], progress=None)


def _failed_commit_leftovers(lh: Lakehouse) -> list[str]:
    """A writer that wrote its data file and manifest, then died before committing."""
    table = lh.table("events.raw")
    from icebergdo.schema import to_events

    batch = to_events(events(7, base=T0 + timedelta(hours=5)))
    files = list(_dataframe_to_data_files(table.metadata, batch, table.io))
    stray = f"{table.properties[layout.MANIFESTS_PATH_PROPERTY]}/deadbeef-m0.avro"
    with table.io.new_output(stray).create(overwrite=True) as out:
        out.write(b"not committed")
    return [normalise(f.file_path) for f in files] + [normalise(stray)]


def test_orphans_removed_after_window_only_and_never_referenced(lh: Lakehouse, config) -> None:
    for i in range(3):
        lh.append_events(events(i))
    # A second table whose data prefix is nested inside events.raw's: never ours to delete.
    nested = lh.create_table("misc.nested", pa.schema([pa.field("x", pa.int64())]), data_path="events/nested")
    nested.append(pa.table({"x": pa.array([1, 2], pa.int64())}))
    orphans = _failed_commit_leftovers(lh)
    store = Store(lh.config)
    before = listing(lh)
    assert set(orphans) <= set(before)
    refs = referenced(lh)
    others = table_prefixes(lh.table("misc.nested")).all()  # as maintain() computes from the catalog
    assert any(p.endswith("/events/nested") for p in others)
    kwargs = {"store": store, "warehouse": lh.config.warehouse, "other_prefixes": others}

    r = remove_orphans(lh.table("events.raw"), **kwargs)  # default 3-day window: too recent
    assert r.files_in == 0 and r.details["too_recent"] == len(orphans) and listing(lh) == before

    r = remove_orphans(lh.table("events.raw"), now=time.time() + 4 * 86400, **kwargs)
    after = listing(lh)
    assert r.files_in == len(orphans) and set(orphans).isdisjoint(after)
    assert set(before) - set(after) == set(orphans)  # exactly the orphans
    assert refs <= set(after) | {normalise(lh.table("events.raw").metadata_location)}
    assert lh.query("SELECT count(*) AS n FROM misc.nested").column("n")[0].as_py() == 2
    assert lh.query("SELECT count(*) AS n FROM events").column("n")[0].as_py() == 6


def test_orphans_refuse_a_prefix_that_is_not_the_tables(lh: Lakehouse) -> None:
    lh.append_events(events(0))
    table = lh.table("events.raw")
    with table.transaction() as tx:
        tx.set_properties({"write.data.path": lh.config.warehouse})
    with pytest.raises(UnsafePrefixError, match="warehouse"):
        remove_orphans(lh.table("events.raw"), store=Store(lh.config), warehouse=lh.config.warehouse, other_prefixes=[], older_than_s=0, unsafe_age=True)
    before = listing(lh)
    (r,) = maintain(lh, ["events.raw"], ["orphans"], options=MaintenanceOptions(orphan_age=0, unsafe_orphan_age=True), progress=None)
    assert r.notes and r.notes[0].startswith("refused:") and r.files_in == 0
    assert listing(lh) == before  # nothing deleted


@pytest.mark.sql_catalog_only  # runs the CLI on a config file (tests/integration/procs.py writes SQL ones)
def test_orphan_age_below_the_floor_is_refused_without_the_override(lh: Lakehouse, config, tmp_path) -> None:
    lh.append_events(events(0))
    leftovers = _failed_commit_leftovers(lh)
    before = listing(lh)
    with pytest.raises(UnsafeOperationError, match="unsafe-orphan-age"):
        maintain(lh, ["events.raw"], ["orphans"], options=MaintenanceOptions(orphan_age=59 * 60), progress=None)
    with pytest.raises(UnsafeOperationError, match="floor"):
        remove_orphans(lh.table("events.raw"), store=Store(lh.config), warehouse=lh.config.warehouse, other_prefixes=[], older_than_s=0)
    cfg = procs.write_config(config, tmp_path / "lake.toml")
    run = subprocess.run([*procs.ICEBERGDO, "--config", str(cfg), "maintain", "--orphans", "--orphan-age", "0s"],
                         capture_output=True, env=procs.env(), timeout=300)
    assert run.returncode == UnsafeOperationError.exit_code == 6 and b"--unsafe-orphan-age" in run.stderr
    assert listing(lh) == before  # refused before anything was listed or deleted
    (r,) = maintain(lh, ["events.raw"], ["orphans"], options=MaintenanceOptions(orphan_age=3600), progress=None)  # the floor itself is fine
    assert r.files_in == 0 and r.details["too_recent"] == len(leftovers)


def test_manifest_rewrite_merges_and_keeps_rows(lh: Lakehouse) -> None:
    for i in range(12):
        lh.append_events(events(i, base=T0 + timedelta(hours=i % 2)))
    before = lh.query(ALL)
    table = lh.table("events.raw")
    assert len(table.current_snapshot().manifests(table.io)) == 12
    r = rewrite_manifests(table)
    table = lh.table("events.raw")
    assert r.files_in == 12 and len(table.current_snapshot().manifests(table.io)) == 1
    assert table.current_snapshot().summary.operation == Operation.REPLACE
    assert int(table.current_snapshot().summary["total-data-files"]) == 12
    assert lh.query(ALL).equals(before)
    lh.append_events(events(50))  # appends after a rewrite still work
    assert lh.query(ALL).num_rows == before.num_rows + 2


def test_lock_is_exclusive_and_expires(lh: Lakehouse) -> None:
    lh.append_events(events(0))
    a = table_lock(lh, "events.raw", ttl=3)  # a database row on SQL catalogs, Iceberg tags on a REST catalog
    b = table_lock(lh, "events.raw", ttl=30)
    taken = time.monotonic()
    assert a.acquire() and not b.acquire()
    skipped = maintain(lh, ["events.raw"], ["compact"], progress=None)
    assert skipped[0].details["skipped"] == "locked" and skipped[0].notes[0].startswith("skipped: locked by another maintainer")
    if isinstance(a, TableLock):
        a._stop_heartbeat()  # a's holder "hangs": no more renewals, so its lease expires
    time.sleep(max(0.0, taken + 3.2 - time.monotonic()))
    assert b.acquire()
    b.release(summary={"ok": True})
    assert a.acquire()  # free again
    a.release()


LOCK_HOLDER = r"""
import sys, time
from icebergdo import Config, Lakehouse
from icebergdo.maintenance.lock import TableLock
cfg, table, hold_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
lh = Lakehouse.open(Config.from_file(cfg))
lock = TableLock(lh.catalog_engine, lh.config.catalog_name, table, ttl=600)
assert lock.acquire()
print("held", flush=True)
time.sleep(hold_s)
lock.release()
print("released", flush=True)
time.sleep(60)
"""


def _hold_lock(cfg, hold_s: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(cfg), "events.raw", str(hold_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=procs.env())
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"held", proc.stderr.read() if proc.stderr else b""
    return proc


@pytest.mark.sql_catalog_only  # the holder is found by its row in the catalog database
def test_killed_maintainer_is_taken_over_at_once_and_cli_says_skipped(lh: Lakehouse, config, tmp_path) -> None:
    """Issue 14.8: a dead holder on this host does not block for the TTL; a skipped run exits 5; --wait waits."""
    for i in range(5):
        lh.append_events(events(i))
    cfg = procs.write_config(config, tmp_path / "lake.toml")
    holder = _hold_lock(cfg, hold_s=600)
    try:
        mine = TableLock(lh.catalog_engine, lh.config.catalog_name, "events.raw", ttl=600)
        assert not mine.acquire()  # a live holder (10-minute lease) keeps it
        run = subprocess.run([*procs.ICEBERGDO, "--config", str(cfg), "maintain", "--compact"], capture_output=True, env=procs.env(), timeout=300)
        assert run.returncode == LockBusyError.exit_code == 5, run.stderr.decode()[-2000:]
        assert b"skipped" in run.stderr and b"events.raw" in run.stderr
        assert len(list(lh.table("events.raw").scan().plan_files())) == 5  # nothing was compacted
    finally:
        procs.kill(holder)  # SIGKILL: no release, its lease would last 10 minutes
    started = time.monotonic()
    assert mine.acquire() and mine.took_over is not None and f":{holder.pid}:" in mine.took_over
    assert time.monotonic() - started < 5
    mine.release()

    holder = _hold_lock(cfg, hold_s=2)  # a live holder that finishes in 2 s
    try:
        run = subprocess.run([*procs.ICEBERGDO, "--config", str(cfg), "maintain", "--compact", "--wait", "2m"],
                             capture_output=True, env=procs.env(), timeout=300)
        assert run.returncode == 0, run.stderr.decode()[-2000:]
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"released"  # it did hold it meanwhile
    finally:
        procs.kill(holder)
    files = list(lh.table("events.raw").scan().plan_files())
    assert len(files) == 1 and "/_compact-" in files[0].file.file_path  # the waiting run did the work


@pytest.mark.sql_catalog_only
def test_lease_heartbeat_outlives_the_ttl_and_notices_a_takeover(lh: Lakehouse) -> None:
    engine = lh.catalog_engine
    a = TableLock(engine, lh.config.catalog_name, "events.raw", ttl=1.0)
    b = TableLock(engine, lh.config.catalog_name, "events.raw", ttl=1.0, heartbeat=False)
    assert a.acquire()
    time.sleep(2.5)  # a "job" longer than the TTL: the heartbeat keeps renewing
    assert not b.acquire()
    a.refresh()  # still ours
    a._stop_heartbeat()  # a hangs; its lease runs out and b takes the table
    time.sleep(1.2)
    assert b.acquire()
    with pytest.raises(LockBusyError, match="lost"):
        a.refresh()
    b.release()


def test_cli_plan_dry_run_and_health(lh: Lakehouse, config, capsys, tmp_path) -> None:
    for i in range(6):
        lh.append_events(events(i))
    cfg_file = tmp_path / "lake.toml"
    lines = [f'[catalog]\nuri = "{config.catalog_uri}"\nwarehouse = "{config.warehouse}"\n']
    if config.is_rest:
        lines = [f'[catalog]\ntype = "rest"\nuri = "{config.catalog_uri}"\ntoken = "{config.rest.token}"\nwarehouse = "{config.warehouse}"\n']
    if config.s3:
        s3 = config.s3
        lines.append(f'[s3]\nendpoint = "{s3.endpoint}"\nregion = "{s3.region}"\naccess_key_id = "{s3.access_key_id}"\nsecret_access_key = "{s3.secret_access_key}"\n')
    cfg_file.write_text("\n".join(lines))
    before = listing(lh)
    assert cli_main(["--config", str(cfg_file), "maintain", "--dry-run", "--older-than", "0s"]) == 0
    out = capsys.readouterr().out
    assert "plan:" in out and "compact" in out and "rewrite 6" in out
    assert listing(lh) == before  # dry run changed nothing
    assert cli_main(["--config", str(cfg_file), "maintain", "--compact", "--manifests", "--expire", "--older-than", "0s"]) == 0
    out = capsys.readouterr().out
    assert "done in" in out
    assert cli_main(["--config", str(cfg_file), "health", "--json"]) == 0
    (h,) = json.loads(capsys.readouterr().out)
    assert h["table"] == "events.raw" and h["data_files"] == 1 and h["snapshots"] == 1 and h["manifests"] == 1
    assert h["last_maintenance"] is not None and h["unreferenced_files"] == 0
    assert cli_main(["--config", str(cfg_file), "maintain", "--table", "nope.nope"]) != 0
    assert cli_main(["--config", str(cfg_file), "maintain", "--older-than", "tomorrow"]) != 0


def test_plan_reports_every_step(lh: Lakehouse) -> None:
    for i in range(6):
        lh.append_events(events(i))
    reports = plan(lh, options=MaintenanceOptions(older_than=0, orphan_age=0, unsafe_orphan_age=True), progress=None)
    assert [r.step for r in reports] == ["compact", "manifests", "expire", "orphans"]
    assert all(r.dry_run for r in reports)
    assert health(lh)[0]["small_files"] == 6


def test_run_every_runs_rounds_and_records_last_run(lh: Lakehouse) -> None:
    from icebergdo.maintenance import run_every

    for i in range(5):
        lh.append_events(events(i))
    rounds: list[list] = []
    run_every(lh, 0.01, ["events.raw"], ["compact"], progress=lambda _m: None, on_round=rounds.append, rounds=2)
    assert [r[0].files_in for r in rounds] == [5, 0]  # the second round finds nothing left to do
    (h,) = lh.health(["events.raw"])
    assert h["data_files"] == 1 and h["last_maintenance"] is not None
    assert h["last_maintenance_summary"]["steps"][0]["step"] == "compact"


def test_compaction_bins_large_partitions_by_target_size(lh: Lakehouse) -> None:
    for i in range(10):
        lh.append_events(events(i))
    before = lh.query(ALL)
    table = lh.table("events.raw")
    sizes = [t.file.file_size_in_bytes for t in table.scan().plan_files()]
    target = 3 * max(sizes) + 1  # about three inputs per output
    r = compact(table, store=Store(lh.config), target_size=target)
    assert r.files_in == 10 and r.details["groups"] == 3 and 3 <= r.files_out <= 4
    assert lh.query(ALL).equals(before)


def test_retention_on_cdc_log_keeps_current_state(lh: Lakehouse, config) -> None:
    now = datetime.now(UTC)
    coll = lh.collection("shop", "orders", key=["id"])
    coll.apply([{"op": "insert", "ts": now - timedelta(days=10), "seq": 1, "id": "a", "v": 1}])
    coll.apply([{"op": "insert", "ts": now - timedelta(days=9), "seq": 1, "id": "b", "v": 1}])
    coll.apply([{"op": "update", "ts": now, "seq": 2, "id": "b", "v": 2}])
    cfg = dataclasses.replace(config, sections={"retention": {"shop.orders__deltas": "5d"}})
    (r,) = maintain(Lakehouse.open(cfg), ["shop.orders__deltas"], ["retention"], progress=None)
    assert r.files_in == 2  # the two old days of the change log
    con = lh.duckdb()
    assert con.execute('SELECT id, _seq FROM shop."orders__deltas"').fetchall() == [("b", 2)]
    assert con.execute("SELECT id, v FROM shop.orders ORDER BY id").fetchall() == [("a", 1), ("b", 2)]  # state untouched
    cfg = dataclasses.replace(config, sections={"retention": {"shop.orders": "5d"}})
    with pytest.raises(BadInputError, match="CDC current-state"):
        maintain(Lakehouse.open(cfg), None, ["retention"], progress=None)


def _enable_dedupe(lh: Lakehouse, window: str = "24h") -> None:
    lh.set_dedupe("events.raw", "id", window=window)


def _ev(eid: str, ts: datetime, ingested: datetime, note: str) -> dict:
    return {"id": eid, "ts": ts, "type": "webhook", "ingested_at": ingested, "payload": {"note": note}}


def _bulky(note: str, i: int, j: int) -> str:
    """A note of ~70 incompressible bytes: the compacted file is then far bigger than a few one-row
    files together, whatever the encodings (the planner bins files by size)."""
    return f"{note} {hashlib.sha256(f'{i}-{j}'.encode()).hexdigest()}"


DEDUP = "SELECT id, ts, ingested_at, payload FROM events_dedup ORDER BY id, ts, ingested_at"
EVERYTHING = "SELECT id, ts, ingested_at, payload FROM events ORDER BY id, ts, ingested_at"


def test_dedupe_view_hides_and_compaction_removes_later_copies(lh: Lakehouse) -> None:
    """Issue 11.6: first arrival kept; copies within the window removed at compaction; the view shows it before."""
    lh.events_table()
    _enable_dedupe(lh)
    h0, h1 = T0 + timedelta(minutes=10), T0 + timedelta(hours=1, minutes=10)
    arrive = datetime(2026, 1, 2, tzinfo=UTC)
    batches = [
        [_ev("a", h0, arrive, "a first"), _ev("b", h0, arrive, "b first"), _ev("c", h0, arrive, "c first"), _ev("d", h0, arrive, "d in hour 0")],
        [_ev("a", h0, arrive + timedelta(hours=1), "a again after 1h"), _ev("d", h1, arrive + timedelta(hours=1), "d in hour 1: another event")],
        [_ev("b", h0, arrive + timedelta(hours=30), "b again after 30h: beyond the window")],
        [_ev("c", h0, arrive + timedelta(hours=2), "c again after 2h")],
        [_ev("c", h0 + timedelta(seconds=1), arrive + timedelta(hours=3), "c third, 3h after the first")],
        [_ev("e", h0, arrive, "e")],
    ]
    for b in batches:
        lh.append_events(b)
    everything = lh.query(EVERYTHING)
    assert everything.num_rows == 10
    expected = sorted([
        ("a", "a first"), ("b", "b first"), ("b", "b again after 30h: beyond the window"), ("c", "c first"),
        ("d", "d in hour 0"), ("d", "d in hour 1: another event"), ("e", "e"),
    ])
    view = lh.query(DEDUP)
    assert sorted((r["id"], json.loads(r["payload"])["note"]) for r in view.to_pylist()) == expected
    assert lh.query(EVERYTHING).equals(everything)  # the view changed nothing

    assert lh.duckdb(live=False).execute(DEDUP).to_arrow_table().equals(view)  # the as-of-now views agree

    report = compact(lh.table("events.raw"), store=Store(lh.config))

    assert report.details["duplicates_removed"] == 3 and report.files_in == 6  # hour 0's six files
    snap = lh.table("events.raw").current_snapshot()
    assert snap.summary.operation == Operation.OVERWRITE and snap.summary["icebergdo.dedupe.removed"] == "3"
    assert int(snap.summary["deleted-records"]) - int(snap.summary["added-records"]) == 3
    after = lh.query(EVERYTHING)
    assert after.equals(lh.query(DEDUP.replace("events_dedup", "events")))
    assert lh.query(DEDUP).equals(view)  # the view gives the same rows before and after compaction
    assert sorted((r["id"], json.loads(r["payload"])["note"]) for r in after.to_pylist()) == expected
    assert lh.table("events.raw").scan().to_arrow().num_rows == 7  # pyiceberg agrees


def test_dedupe_rewrites_a_big_file_that_holds_the_later_copy(lh: Lakehouse) -> None:
    lh.events_table()
    _enable_dedupe(lh, window="7d")
    h0 = T0 + timedelta(minutes=5)
    late = datetime(2026, 1, 5, tzinfo=UTC)
    early = datetime(2026, 1, 3, tzinfo=UTC)
    for i in range(5):
        lh.append_events([_ev(f"x{i}-{j}", h0 + timedelta(seconds=j), late, _bulky("big", i, j)) for j in range(200)])
    compact(lh.table("events.raw"), store=Store(lh.config))
    (big,) = [t.file for t in lh.table("events.raw").scan().plan_files()]
    # A replayed batch commits later but arrived earlier: its copy of x0-7 is the first arrival.
    lh.append_events([_ev("x0-7", h0 + timedelta(seconds=7), early, "replayed, arrived first")])
    for i in range(4):
        lh.append_events([_ev(f"y{i}", h0, late, "small")])
    view = lh.query(DEDUP)
    assert [json.loads(r["payload"])["note"] for r in view.to_pylist() if r["id"] == "x0-7"] == ["replayed, arrived first"]

    report = compact(lh.table("events.raw"), store=Store(lh.config), target_size=big.file_size_in_bytes)  # the big file is not small

    assert report.details["duplicates_removed"] == 1
    assert report.files_in == 6  # the 5 small files, and the big one, rewritten for one row
    live = {t.file.file_path for t in lh.table("events.raw").scan().plan_files()}
    assert big.file_path not in live
    after = lh.query(EVERYTHING)
    assert after.num_rows == 1000 + 4 and lh.query(DEDUP).equals(view)
    assert [json.loads(r["payload"])["note"] for r in after.to_pylist() if r["id"] == "x0-7"] == ["replayed, arrived first"]


def test_dedupe_group_is_dropped_when_a_file_that_decided_it_changes_concurrently(lh: Lakehouse, config) -> None:
    lh.events_table()
    _enable_dedupe(lh)
    h0 = T0 + timedelta(minutes=5)
    first = datetime(2026, 1, 3, tzinfo=UTC)
    for i in range(5):
        lh.append_events([_ev(f"k{i}-{j}", h0 + timedelta(seconds=j), first, _bulky("first", i, j)) for j in range(100)])
    compact(lh.table("events.raw"), store=Store(lh.config))
    (big,) = [t.file for t in lh.table("events.raw").scan().plan_files()]
    for i in range(5):  # later copies of k0-1 .. k0-5, one per small file
        lh.append_events([_ev(f"k0-{i + 1}", h0 + timedelta(seconds=i + 1), first + timedelta(hours=1), "copy")])
    other = Lakehouse.open(config)

    fired: list[bool] = []

    def progress(msg: str) -> None:  # outputs written, not committed: another writer rewrites the big file
        if "compact group" in msg and not fired:
            other.table("events.raw").delete("id = 'k4-99'")
            fired.append(True)

    report = compact(lh.table("events.raw"), store=Store(lh.config), target_size=big.file_size_in_bytes, progress=progress)

    assert fired and report.details["aborted_groups"] >= 1 and report.details["duplicates_removed"] == 0
    rows = lh.query("SELECT id, payload FROM events WHERE id LIKE 'k0-%'").to_pylist()
    assert sum(1 for r in rows if json.loads(r["payload"])["note"] == "copy") == 5  # nothing dropped on a stale decision
    assert lh.query("SELECT count(*) AS n FROM events_dedup").column("n")[0].as_py() == 499
