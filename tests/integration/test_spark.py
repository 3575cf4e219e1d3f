"""Apache Spark (Iceberg's Java library) on icebergdo tables, checked against DuckDB.

Both backends: a local folder + SQLite, and SeaweedFS S3 + PostgreSQL. One JVM serves the
whole test process (`icebergdo.engines.spark.base_session`, shared by every test_spark_* module and
ended with the process); each lakehouse gets a light `newSession()`.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from icebergdo import Lakehouse, layout
from icebergdo.cli import main as cli_main
from icebergdo.config import Config
from icebergdo.engines import spark as isp
from icebergdo.engines import spark_jars
from icebergdo.maintenance import MaintenanceOptions, maintain
from icebergdo.maintenance.lock import TableLock
from tests.integration import procs

pytestmark = pytest.mark.slow

COLUMNS = "id, type, source, namespace, collection, payload"


def _events(n: int, base: datetime, tag: str) -> list[dict[str, Any]]:
    """Events over three hours, with nulls, unicode and nested JSON payloads."""
    out = []
    for i in range(n):
        out.append(
            {
                "ts": (base + timedelta(minutes=37 * i, microseconds=i)).isoformat(),
                "type": ["webhook", "rpc", "custom"][i % 3],
                "source": None if i % 4 == 0 else f"src-{i % 5}",
                "namespace": "shop" if i % 2 else None,
                "collection": "orders" if i % 2 else None,
                "payload": {"i": i, "tag": tag, "name": "Zoë ✓", "nested": {"a": [1, 2, i]}},
            }
        )
    return out


def _seed(lh: Lakehouse) -> None:
    base = datetime(2024, 3, 1, 10, 5, tzinfo=UTC)
    lh.append_events(_events(7, base, "a"))
    lh.append_events(_events(6, base + timedelta(hours=1), "b"))
    lh.append_events(_events(5, base + timedelta(hours=2), "c"))


def _duck_rows(lh: Lakehouse) -> list[tuple]:
    return [
        tuple(r.values())
        for r in lh.query(f"SELECT {COLUMNS}, epoch_us(ts) AS ts_us, epoch_us(ingested_at) AS ing_us FROM events ORDER BY id").to_pylist()
    ]


def _spark_rows(df: Any) -> list[tuple]:
    df.createOrReplaceTempView("t_check")
    rows = df.sparkSession.sql(
        f"SELECT {COLUMNS}, unix_micros(ts) AS ts_us, unix_micros(ingested_at) AS ing_us FROM t_check ORDER BY id"
    ).collect()
    return [tuple(r) for r in rows]


# -- pure helpers ----------------------------------------------------------------------------------
def test_jdbc_uri_mapping() -> None:
    assert isp.jdbc_uri("sqlite:////abs/lake/catalog.db") == ("jdbc:sqlite:/abs/lake/catalog.db", {})
    uri, props = isp.jdbc_uri("postgresql+psycopg://ice%40berg:p%3Ass@db.example:5433/lake")
    assert uri == "jdbc:postgresql://db.example:5433/lake"
    assert props == {"jdbc.user": "ice@berg", "jdbc.password": "p:ss"}


def test_relocated_jackson_jar_is_complete_and_cached() -> None:
    """Every Jackson class the runtime jar refers to exists in the rebuilt jar, renamed throughout."""
    import zipfile

    jar = spark_jars.shaded_jackson_jar()
    assert spark_jars.shaded_jackson_jar() == jar  # cached: same file, not rebuilt
    with zipfile.ZipFile(jar) as z:
        names = set(z.namelist())
        builder = z.read("org/apache/iceberg/shaded/com/fasterxml/jackson/core/JsonFactoryBuilder.class")
    assert b"org/apache/iceberg/shaded/com/fasterxml/jackson/core/JsonFactory" in builder
    assert b"\x01\x00" in builder and b"Lcom/fasterxml/jackson" not in builder
    assert not any(n.startswith("com/") for n in names)
    with zipfile.ZipFile(spark_jars.runtime_jar()) as rt:
        wanted = set()
        for name in rt.namelist():
            if name.startswith("org/apache/iceberg/") and name.endswith(".class") and "/shaded/" not in name:
                data = rt.read(name)
                start = 0
                marker = b"org/apache/iceberg/shaded/com/fasterxml/jackson/"
                while (i := data.find(marker, start)) >= 0:
                    end = i + len(marker)
                    while end < len(data) and (chr(data[end]).isalnum() or data[end] in b"/$_"):
                        end += 1
                    wanted.add(data[i:end].decode() + ".class")
                    start = end
    assert wanted, "the runtime jar should refer to relocated Jackson classes"
    missing = sorted(w for w in wanted if w not in names)
    assert not missing, missing[:10]


def test_relocate_class_rewrites_constant_pool_lengths() -> None:
    """A hand-made class file: UTF-8 constants grow and get new length prefixes; the rest is kept."""
    import struct

    def utf8(text: bytes) -> bytes:
        return b"\x01" + struct.pack(">H", len(text)) + text

    pool = utf8(b"com/fasterxml/jackson/core/JsonFactory") + b"\x07\x00\x01" + b"\x05" + b"\x00" * 8 + utf8(b"x.com.fasterxml.jackson.y")
    cls = b"\xca\xfe\xba\xbe\x00\x00\x00\x3d" + struct.pack(">H", 6) + pool + b"TAIL"
    out = spark_jars.relocate_class(cls)
    assert utf8(b"org/apache/iceberg/shaded/com/fasterxml/jackson/core/JsonFactory") in out
    assert utf8(b"x.org.apache.iceberg.shaded.com.fasterxml.jackson.y") in out
    assert out.endswith(b"\x07\x00\x01\x05" + b"\x00" * 8 + utf8(b"x.org.apache.iceberg.shaded.com.fasterxml.jackson.y") + b"TAIL")


# -- Spark on real lakehouses ----------------------------------------------------------------------
def test_spark_reads_events_like_duckdb(lh: Lakehouse) -> None:
    _seed(lh)
    expected = _duck_rows(lh)
    assert len(expected) == 18
    spark = isp.session(lh)
    by_catalog = _spark_rows(spark.table(f"{lh.config.catalog_name}.events.raw"))
    assert by_catalog == expected
    metadata = lh.table("events.raw").metadata_location
    by_path = _spark_rows(isp.read_metadata(lh, metadata, spark))
    assert by_path == expected
    # A filter on the hour-partitioned column gives the same answer in both engines.
    n = spark.sql("SELECT count(*) FROM events.raw WHERE ts >= TIMESTAMP '2024-03-01 12:00:00'").collect()[0][0]
    expected_n = lh.query("SELECT count(*) AS n FROM events WHERE ts >= TIMESTAMPTZ '2024-03-01 12:00:00+00'").to_pylist()[0]["n"]
    assert n == expected_n and 0 < n < 18


def test_spark_insert_is_read_back_by_icebergdo(lh: Lakehouse) -> None:
    _seed(lh)
    spark = isp.session(lh)
    spark.sql(
        "INSERT INTO events.raw VALUES ('01SPARKINSERT0000000000000', TIMESTAMP '2024-03-02 08:30:00.123456', "
        "'custom', 'spark', 'shop', 'orders', '{\"by\":\"spark\"}', TIMESTAMP '2024-03-02 08:31:00')"
    )
    row = lh.query("SELECT type, source, payload, epoch_us(ts) AS us FROM events WHERE id = '01SPARKINSERT0000000000000'").to_pylist()
    assert row == [{"type": "custom", "source": "spark", "payload": '{"by":"spark"}', "us": 1709368200123456}]
    assert lh.query("SELECT count(*) AS n FROM events").to_pylist()[0]["n"] == 19
    table = lh.table("events.raw")
    assert table.scan().to_arrow().num_rows == 19
    # Our Spark session writes the ADR layout (icebergdo's catalog hands Java the ADR LocationProvider).
    spark_files = [p for p in table.inspect.files().column("file_path").to_pylist() if "/2024/03/02/08/" in p]
    assert len(spark_files) == 1 and layout.EVENT_FILE_RE.search(spark_files[0]), spark_files
    data_path = table.properties["write.data.path"]
    assert spark_files[0].replace("file:/", "file:///", 1).startswith(data_path) or spark_files[0].startswith(data_path)
    assert "write.location-provider.impl" not in table.properties  # nothing Java-only in the table itself
    # pyiceberg can keep appending after Spark's commit.
    lh.append_events(_events(2, datetime(2024, 3, 3, tzinfo=UTC), "after"))
    assert spark.sql("SELECT count(*) FROM events.raw").collect()[0][0] == 21


def test_spark_rewrite_data_files_keeps_content(lh: Lakehouse) -> None:
    _seed(lh)
    before = _duck_rows(lh)
    files_before = len(lh.table("events.raw").inspect.files())
    (r,) = maintain(lh, ["events.raw"], ["compact"], engine="spark", progress=None)
    assert (r.step, r.files_in, r.details["engine"]) == ("compact", 0, "spark")  # < 5 files per hour
    # Another maintainer (e.g. the Python engine) holds the table: Spark leaves it alone.
    with TableLock(lh.catalog_engine, lh.config.catalog_name, "events.raw"):
        busy = maintain(lh, ["events.raw"], ["compact"], engine="spark", options=MaintenanceOptions(min_input_files=1), progress=None)
    assert [(b.table, b.step, b.details.get("skipped")) for b in busy] == [("events.raw", "all", "locked")]
    assert busy[0].notes[0].startswith("skipped: locked by another maintainer")
    assert len(lh.table("events.raw").inspect.files()) == files_before
    (r,) = maintain(lh, ["events.raw"], ["compact"], engine="spark", options=MaintenanceOptions(min_input_files=1), progress=None)
    hours = lh.query("SELECT count(DISTINCT date_trunc('hour', ts)) AS n FROM events").to_pylist()[0]["n"]
    assert files_before > hours == 5
    # Every multi-file hour became one file; a lone file is left as it is.
    untouched = hours - r.files_out
    assert r.files_in == r.details["rewritten_data_files_count"] == files_before - untouched and r.files_out >= 3
    assert r.bytes_in == r.details["rewritten_bytes_count"] > 0 and r.bytes_out > 0 and r.snapshot_id == lh.table("events.raw").current_snapshot().snapshot_id
    assert _duck_rows(lh) == before
    files = lh.table("events.raw").inspect.files().column("file_path").to_pylist()
    assert len(files) == hours
    assert sum("/_compact-" in f for f in files) == r.files_out  # the python engine's prefix for compaction outputs


def test_spark_maintain_all_steps(lh: Lakehouse) -> None:
    _seed(lh)
    before = _duck_rows(lh)
    table = lh.table("events.raw")
    data_path = table.properties["write.data.path"]
    orphan = f"{data_path}/2024/03/01/10/01ORPHANORPHANORPHANORPHAN0.parquet"
    with table.io.new_output(orphan).create(overwrite=True) as f:
        f.write(b"not referenced by any snapshot")
    hint = table.metadata_location.rsplit("/", 1)[0] + "/version-hint.text"
    assert table.io.new_input(hint).exists()
    files_before = len(table.inspect.files())
    opts = MaintenanceOptions(older_than=0, retain_last=1, orphan_age=0, unsafe_orphan_age=True, min_input_files=1)

    # The dry run is the python planners' (Iceberg's procedures cannot dry-run): nothing changes.
    dry = maintain(lh, None, ["orphans", "expire"], dry_run=True, engine="spark", options=opts, progress=None)
    assert {(d.table, d.step) for d in dry} >= {("events.raw", "orphans"), ("events.raw", "expire")}
    dry_orphans = next(d for d in dry if d.step == "orphans" and d.table == "events.raw")
    assert [p.endswith("01ORPHANORPHANORPHANORPHAN0.parquet") for p in dry_orphans.details["paths"]] == [True]
    assert table.io.new_input(orphan).exists()

    out = maintain(lh, ["events.raw"], ["compact", "expire", "orphans", "manifests"], engine="spark", options=opts, progress=None)
    steps = {r.step: r for r in out}
    assert list(steps) == ["compact", "manifests", "expire", "orphans"]  # the driver's order
    assert all(r.details["engine"] == "spark" and not r.dry_run for r in out)
    assert steps["compact"].files_in >= files_before - 2
    assert steps["expire"].details["deleted_data_files_count"] == steps["compact"].files_in
    assert steps["orphans"].files_in == 1 and steps["orphans"].details["paths"][0].endswith("01ORPHANORPHANORPHANORPHAN0.parquet")
    assert not table.io.new_input(orphan).exists()
    assert table.io.new_input(hint).exists()  # Iceberg treats the version hint as metadata, not an orphan
    fresh = lh.table("events.raw")
    assert len(fresh.snapshots()) == 1
    assert _duck_rows(lh) == before
    assert fresh.scan().to_arrow().num_rows == 18


def test_spark_sql_cli(lh: Lakehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _seed(lh)
    cfg = procs.write_config(lh.config, tmp_path / "lake.toml")
    rc = cli_main(["--config", str(cfg), "spark-sql", "SELECT type, count(*) AS n FROM events.raw GROUP BY type ORDER BY type", "--format", "json"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    assert got == lh.query("SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type").to_pylist()
    assert sum(r["n"] for r in got) == 18
    assert cli_main(["--config", str(cfg), "spark-sql", "SELECT type FROM events.raw ORDER BY type", "--format", "jsonl", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == lh.query("SELECT type FROM events ORDER BY type LIMIT 2").to_pylist()
    # `maintain --engine spark` prints the same summary as the python engine; --json gives StepReports.
    rc = cli_main(["--config", str(cfg), "maintain", "--engine", "spark", "--orphans", "--table", "events.raw"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith("plan:") and "done in" in out and "engine=spark" in out and "{" not in out.split("done in")[1].split("\n")[0]
    rc = cli_main(["--config", str(cfg), "maintain", "--engine", "spark", "--orphans", "--table", "events.raw", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["table"], r["step"], r["files_in"], r["dry_run"], r["details"]["engine"]) for r in report] == [("events.raw", "orphans", 0, False, "spark")]
    rc = cli_main(["--config", str(cfg), "spark-sql", "SELECT * FROM events.nope"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "spark-sql failed" in err and "nope" in err and "\n\tat " not in err


def test_session_errors_name_the_problem(tmp_path: Path) -> None:
    from icebergdo.errors import ConfigError

    with pytest.raises(ConfigError, match="JDBC"):
        isp.catalog_conf(Config(catalog_uri="mysql://h/db", warehouse=(tmp_path / "w").as_uri()))
    with pytest.raises(ConfigError, match="catalog name"):
        isp.catalog_conf(Config(catalog_uri=f"sqlite:///{tmp_path}/c.db", warehouse=(tmp_path / "w").as_uri(), catalog_name="a-b"))
    assert shutil.which("java") or spark_jars.java_home()


def test_spark_reads_cdc_current_state(lh: Lakehouse) -> None:
    """A collection's current state (bucket-partitioned, copy-on-write folds) and its change log."""
    coll = lh.collection("shop", "orders")
    t0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    changes = [
        {"op": "insert", "ts": (t0 + timedelta(seconds=i)).isoformat(), "seq": i, "id": f"o{i}", "qty": i, "note": f"n{i} ✓"}
        for i in range(1, 9)
    ]
    coll.apply(changes)
    coll.apply(
        [
            {"op": "update", "ts": (t0 + timedelta(minutes=5)).isoformat(), "seq": 20, "id": "o2", "qty": 200, "note": "changed"},
            {"op": "delete", "ts": (t0 + timedelta(minutes=6)).isoformat(), "seq": 21, "id": "o3"},
        ]
    )
    cols = "id, qty, note, _seq"
    expected = [tuple(r.values()) for r in lh.query(f"SELECT {cols} FROM shop.orders ORDER BY id").to_pylist()]
    assert len(expected) == 7 and ("o2", 200, "changed", 20) in expected
    spark = isp.session(lh)
    got = [tuple(r) for r in spark.sql(f"SELECT {cols} FROM shop.orders ORDER BY id").collect()]
    assert got == expected
    state = lh.table("shop.orders")
    by_path = isp.read_metadata(lh, state.metadata_location, spark)
    by_path.createOrReplaceTempView("state_by_path")
    assert [tuple(r) for r in spark.sql(f"SELECT {cols} FROM state_by_path ORDER BY id").collect()] == expected
    n_log = lh.query("SELECT count(*) AS n FROM shop.orders__deltas").to_pylist()[0]["n"]
    assert spark.sql("SELECT count(*) FROM shop.orders__deltas").collect()[0][0] == n_log == 10


def test_session_configures_an_existing_session(lh: Lakehouse) -> None:
    """`session(lh, spark=yours)` sets up the catalog in the session you pass and leaves its current catalog alone."""
    _seed(lh)
    mine = isp.base_session().newSession()  # a session built elsewhere (a user's, a cluster's)
    assert isp.session(lh, spark=mine) is mine
    assert mine.catalog.currentCatalog() == "spark_catalog"
    name = lh.config.catalog_name
    assert mine.conf.get(f"spark.sql.catalog.{name}.catalog-impl") == isp.CATALOG_IMPL
    assert mine.sql(f"SELECT count(*) FROM {name}.events.raw").collect()[0][0] == 18
    assert isp.capabilities(mine) == isp.Capabilities(icebergdo=True, aws_sdk=False, extensions=True)
    # Without the AWS SDK on the classpath, S3 goes through icebergdo's FileIO; asking for Iceberg's is refused.
    assert isp.choose_fileio(lh.config, isp.capabilities(mine)) == "icebergdo"
    if lh.config.is_s3:
        assert mine.conf.get(f"spark.sql.catalog.{name}.io-impl") == isp.S3_FILEIO
        with pytest.raises(spark_jars.SparkSetupError, match="iceberg-aws-bundle"):
            isp.session(lh, spark=mine, fileio="iceberg")


def test_spark_conf_lines_attach_a_spark(lh: Lakehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`icebergdo spark conf` prints what a Spark needs; applied to a bare session, it reads the lakehouse."""
    _seed(lh)
    cfg = procs.write_config(lh.config, tmp_path / "lake.toml")
    assert cli_main(["--config", str(cfg), "spark", "conf", "--fileio", "icebergdo"]) == 0
    masked = capsys.readouterr()
    assert "secrets are masked" in masked.err
    for secret in lh.config.secrets():
        assert secret not in masked.out
    assert cli_main(["--config", str(cfg), "spark", "conf", "--fileio", "icebergdo", "--show-secrets"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln and not ln.startswith("#")]
    conf = dict(ln.split(None, 1) for ln in lines)
    for secret in lh.config.secrets():
        assert secret in conf.values() or any(secret in v for v in conf.values())
    assert conf["spark.sql.extensions"] == isp.EXTENSIONS and conf["spark.sql.defaultCatalog"] == lh.config.catalog_name
    assert conf["spark.jars"] == str(spark_jars.icebergdo_jar())
    assert "org.apache.iceberg:iceberg-spark-runtime-3.5_2.12:1.10.2" in conf["spark.jars.packages"]
    bare = isp.base_session().newSession()  # the jars are on this JVM already; apply the rest
    for key, value in conf.items():
        if key.startswith("spark.sql.catalog."):
            bare.conf.set(key, value)
    got = bare.sql(f"SELECT count(*) FROM {lh.config.catalog_name}.events.raw").collect()[0][0]
    assert got == 18
    # submit format: one --packages, one --jars and --conf lines
    assert cli_main(["--config", str(cfg), "spark", "conf", "--format", "submit"]) == 0
    submit = capsys.readouterr().out.splitlines()
    assert submit[0].startswith("--packages ") and submit[1].startswith("--jars ") and all(ln.startswith("--conf ") for ln in submit[2:])
