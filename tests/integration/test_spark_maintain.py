"""`maintain --engine spark`: the one driver's options, safety checks and reports reach Iceberg's procedures.

What the procedures *did* is read back independently (pyiceberg metadata, DuckDB rows, the
store's listing), on both backends. One JVM for the test process (`engines.spark.base_session`).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from ulid import ULID

from icebergdo import Lakehouse, layout
from icebergdo.cli import main as cli_main
from icebergdo.engines import spark as isp
from icebergdo.maintenance import MaintenanceOptions, maintain
from icebergdo.maintenance.lock import last_run
from icebergdo.store import Store
from tests.integration import procs

pytestmark = pytest.mark.slow
T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def _append(lh: Lakehouse, k: int, base: datetime = T0) -> None:
    """Four events over two hours, the same shape every time: files of (nearly) equal size."""
    lh.append_events(
        [{"ts": (base + timedelta(minutes=30 * j, seconds=k)).isoformat(), "type": "webhook", "source": "s", "payload": {"k": k, "j": j}} for j in range(4)]
    )


def _cli(cfg: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    """`maintain --engine spark ... --json` → the StepReport dicts it printed."""
    rc = cli_main(["--config", str(cfg), "maintain", "--engine", "spark", "--table", "events.raw", "--json", *args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


def _count(lh: Lakehouse, table: str = "events") -> int:
    return lh.query(f"SELECT count(*) AS n FROM {table}").to_pylist()[0]["n"]


def _files(lh: Lakehouse, name: str = "events.raw") -> list[str]:
    return lh.table(name).inspect.files().column("file_path").to_pylist()


def _write(lh: Lakehouse, path: str) -> None:
    with lh.table("events.raw").io.new_output(path).create(overwrite=True) as f:
        f.write(b"an orphan: written, never committed")


def _exists(lh: Lakehouse, path: str) -> bool:
    return lh.table("events.raw").io.new_input(path).exists()


def test_cli_options_reach_the_procedures(lh: Lakehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--target-file-size, --min-input-files, --older-than, --retain-last, --orphan-age: each changes what Iceberg does."""
    for k in range(6):
        _append(lh, k)
    rows = _count(lh)
    cfg = procs.write_config(lh.config, tmp_path / "lake.toml")
    sizes = lh.table("events.raw").inspect.files().column("file_size_in_bytes").to_pylist()
    median = int(statistics.median(sizes))
    assert len(sizes) == 12 and all(0.8 * median <= s <= 1.7 * median for s in sizes)  # uniform: see _append

    # --target-file-size: with the target at the files' own size none is "small" (Iceberg: < 75 % of it).
    (r,) = _cli(cfg, capsys, "--compact", "--min-input-files", "2", "--target-file-size", str(median))
    assert (r["step"], r["files_in"], r["details"]["rewritten_data_files_count"]) == ("compact", 0, 0)
    # --min-input-files: 6 small files per hour; with 7 asked for nothing is rewritten (Iceberg's default 5 would).
    (r,) = _cli(cfg, capsys, "--compact", "--min-input-files", "7")
    assert r["files_in"] == 0 and len(_files(lh)) == 12
    # --rollup-after: hours older than a day are merged whole, whatever --min-input-files says.
    (r,) = _cli(cfg, capsys, "--compact", "--min-input-files", "7", "--rollup-after", "1d")
    assert (r["files_in"], r["files_out"]) == (12, 2) and len(_files(lh)) == 2 and r["bytes_out"] > 0
    assert r["details"]["rollup_where"].startswith("`ts` < TIMESTAMP")
    assert _count(lh) == rows

    # --older-than / --retain-last: 7 snapshots, all younger than a day.
    history = [s.snapshot_id for s in lh.table("events.raw").snapshots()]
    assert len(history) == 7
    (r,) = _cli(cfg, capsys, "--expire", "--older-than", "1d", "--retain-last", "1")
    assert r["files_in"] == 0 and len(lh.table("events.raw").snapshots()) == 7
    (r,) = _cli(cfg, capsys, "--expire", "--older-than", "0s", "--retain-last", "3")
    kept = [s.snapshot_id for s in lh.table("events.raw").snapshots()]
    assert kept == history[-3:]  # exactly the newest N
    assert r["details"]["retain_last"] == 3 and r["details"]["deleted_manifest_lists_count"] == 4
    assert r["details"]["deleted_data_files_count"] == 0  # the compacted inputs: still in the kept appends
    (r,) = _cli(cfg, capsys, "--expire", "--older-than", "0s", "--retain-last", "1")
    assert [s.snapshot_id for s in lh.table("events.raw").snapshots()] == history[-1:]
    assert r["details"]["deleted_data_files_count"] == 12  # now unreachable: freed
    assert _count(lh) == rows

    # --orphan-age: a fresh orphan survives a 2-day window and goes with a zero one.
    data = lh.table("events.raw").properties["write.data.path"]
    fresh = f"{data}/2024/03/01/10/{ULID()}.parquet"
    _write(lh, fresh)
    old = None
    if not lh.config.is_s3:  # a local file can be made old; an S3 object's LastModified cannot
        old = f"{data}/2024/03/01/11/{ULID()}.parquet"
        _write(lh, old)
        five_days_ago = time.time() - 5 * 86400
        os.utime(old[len("file://"):], (five_days_ago, five_days_ago))
    (r,) = _cli(cfg, capsys, "--orphans", "--orphan-age", "2d")
    assert _exists(lh, fresh)
    assert r["files_in"] == (0 if old is None else 1)
    if old is not None:
        assert not _exists(lh, old) and r["details"]["paths"][0].endswith(old.rsplit("/", 1)[1])
    (r,) = _cli(cfg, capsys, "--orphans", "--orphan-age", "0s", "--unsafe-orphan-age")
    assert r["files_in"] == 1 and not _exists(lh, fresh)
    assert _count(lh) == rows and len(_files(lh)) == 2


def test_config_section_drives_the_spark_engine(lh: Lakehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[maintenance] and [retention] reach the spark engine; retention runs as the python job under the lock."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for k in range(3):
        _append(lh, k)  # 2024: older than any retention age below
        _append(lh, k, base=now - timedelta(hours=3))
    recent = _count(lh) // 2
    cfg = procs.write_config(lh.config, tmp_path / "lake.toml", extra='[retention]\n"events.raw" = "30d"\n[maintenance]\nmin_input_files = 3\nretain_last = 2\nolder_than = "0s"\n')
    reports = _cli(cfg, capsys, "--retention", "--compact", "--expire")
    by = {r["step"]: r for r in reports}
    assert list(by) == ["retention", "compact", "expire"]
    assert by["retention"]["files_in"] == 6 and any("python job" in n for n in by["retention"]["notes"])
    assert _count(lh) == recent  # the 2024 hours are gone
    assert by["compact"]["details"]["rewritten_data_files_count"] == by["compact"]["files_in"] == 6  # min_input_files = 3
    assert len(lh.table("events.raw").snapshots()) == 2  # retain_last = 2, older_than = 0s
    assert _count(lh) == recent
    when, summary = last_run(lh.catalog_engine, lh.config.catalog_name, "events.raw")
    assert when is not None and summary is not None and summary["engine"] == "spark"
    assert [s["step"] for s in summary["steps"]] == ["retention", "compact", "expire"]
    # The plan reads the same whichever engine will run it (the python planners).
    plan_spark = maintain(lh, ["events.raw"], ["compact", "orphans"], dry_run=True, engine="spark", progress=None)
    plan_python = maintain(lh, ["events.raw"], ["compact", "orphans"], dry_run=True, progress=None)
    strip = [(p.step, p.files_in, p.bytes_in, p.dry_run) for p in plan_spark]
    assert strip == [(p.step, p.files_in, p.bytes_in, p.dry_run) for p in plan_python] and all(p.dry_run for p in plan_spark)


def test_orphan_prefix_safety_for_the_spark_engine(lh: Lakehouse) -> None:
    """The python engine's checks: warehouse root, the catalog folder, other tables' prefixes."""
    _append(lh, 0)
    nested = lh.create_table("misc.nested", pa.schema([pa.field("x", pa.int64())]), data_path="events/nested")
    nested.append(pa.table({"x": pa.array([1, 2], pa.int64())}))
    store = Store(lh.config)
    stray = f"{lh.config.warehouse}/stray-{ULID()}.parquet"
    _write(lh, stray)
    listing = {f.path for f in store.list(lh.config.warehouse)}
    opts = MaintenanceOptions(orphan_age=0, unsafe_orphan_age=True)

    # events.raw's data prefix holds misc.nested's: that prefix is not listed at all, the rest is.
    (r,) = maintain(lh, ["events.raw"], ["orphans"], engine="spark", options=opts, progress=None)
    assert r.files_in == 0 and any(n.startswith("skipped ") and "events/nested" in n for n in r.notes)
    assert not any(loc.rstrip("/").endswith("/events") for loc in r.details["locations"])
    assert {f.path for f in store.list(lh.config.warehouse)} == listing
    assert lh.query("SELECT count(*) AS n FROM misc.nested").to_pylist()[0]["n"] == 2

    table = lh.table("events.raw")
    for unsafe, why in ((lh.config.warehouse, "warehouse"), (f"{lh.config.warehouse}/catalog", "catalog")):
        with table.transaction() as tx:
            tx.set_properties({"write.data.path": unsafe})
        (r,) = maintain(lh, ["events.raw"], ["orphans"], engine="spark", options=opts, progress=None)
        assert r.notes and r.notes[0].startswith("refused:") and why in r.notes[0] and r.files_in == 0
        assert listing <= {f.path for f in store.list(lh.config.warehouse)}  # the stray file too: nothing deleted
    assert _exists(lh, stray)


def test_spark_writes_keep_the_adr_layout(lh: Lakehouse) -> None:
    """After `maintain --engine spark --compact` and a Spark INSERT every live data file is in the ADR layout."""
    for k in range(3):
        _append(lh, k)
    (r,) = maintain(lh, ["events.raw"], ["compact"], engine="spark", options=MaintenanceOptions(min_input_files=2), progress=None)
    assert r.files_out == 2
    spark = isp.session(lh)
    spark.sql(
        "INSERT INTO events.raw VALUES ('01SPARKINSERT0000000000000', TIMESTAMP '2024-03-02 08:30:00', 'custom', 'spark', NULL, NULL, '{}', TIMESTAMP '2024-03-02 08:31:00')"
    )
    files = _files(lh)
    assert len(files) == 3 and sum("/_compact-" in f for f in files) == 2
    for f in files:
        assert layout.EVENT_FILE_RE.search(f.replace("/_compact-", "/")), f  # compaction outputs: `_compact-` + the ADR name
    inserted = next(f for f in files if "/2024/03/02/08/" in f)
    made = ULID.from_str(inserted.rsplit("/", 1)[1].split(".")[0]).datetime  # Java's ULID decodes like python-ulid's
    assert abs((made - datetime.now(UTC)).total_seconds()) < 600
    # Manifests go where pyiceberg puts them (icebergdo.write.manifests.path), not into metadata/.
    table = lh.table("events.raw")
    manifests = table.properties[layout.MANIFESTS_PATH_PROPERTY]
    assert table.current_snapshot().manifest_list.startswith(manifests.replace("file:///", "file:/")) or table.current_snapshot().manifest_list.startswith(manifests)
    assert lh.query("SELECT count(*) AS n FROM events WHERE source = 'spark'").to_pylist()[0]["n"] == 1

    # A CDC change log (day partitions): Spark's compaction writes {ns}/{coll}/deltas/YYYY/MM/DD/_compact-<ulid>.parquet.
    coll = lh.collection("shop", "orders")
    for i in range(3):
        coll.apply([{"op": "insert", "ts": f"2024-05-01T09:0{i}:00+00:00", "seq": i + 1, "id": f"o{i}", "qty": i}])
    (r,) = maintain(lh, ["shop.orders__deltas"], ["compact"], engine="spark", options=MaintenanceOptions(min_input_files=2), progress=None)
    assert r.files_out == 1
    (delta,) = _files(lh, "shop.orders__deltas")
    assert "/shop/orders/deltas/2024/05/01/_compact-" in delta and len(delta.rsplit("-", 1)[1]) == len("01J0000000000000000000000.parquet") + 1


def test_a_foreign_java_writer_keeps_working(lh: Lakehouse) -> None:
    """A Spark with Iceberg's plain JdbcCatalog (no icebergdo jar) writes the same table, in Iceberg's default layout."""
    _append(lh, 0)
    foreign = isp.base_session().newSession()
    for key, value in isp.catalog_conf(lh.config, adr=False).items():
        foreign.conf.set(key, value)
    name = lh.config.catalog_name
    foreign.sql(
        f"INSERT INTO {name}.events.raw VALUES ('01FOREIGN00000000000000000', TIMESTAMP '2024-03-02 09:00:00', "
        "'custom', 'foreign', NULL, NULL, '{}', TIMESTAMP '2024-03-02 09:00:00')"
    )
    files = _files(lh)
    (theirs,) = [f for f in files if "ts_hour=" in f]
    assert "/events/ts_hour=2024-03-02-09/" in theirs  # under write.data.path, Iceberg's default names
    assert _count(lh) == 5 and lh.query("SELECT count(*) AS n FROM events WHERE source = 'foreign'").to_pylist()[0]["n"] == 1
    assert "write.location-provider.impl" not in lh.table("events.raw").properties
