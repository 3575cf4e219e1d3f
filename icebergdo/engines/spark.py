"""Apache Spark on the lakehouse: the same catalog and warehouse, through Iceberg's own Java code.

`session(lh)` gives a SparkSession whose catalog `<config.catalog_name>` is Iceberg's
JdbcCatalog over the very database pyiceberg's SqlCatalog uses (SQLite or PostgreSQL), so
both see the same tables and commits. `maintain(lh, ...)` runs Iceberg's stored procedures.

One JVM per Python process: the first call starts it with every jar on the driver classpath;
each lakehouse then gets its own `newSession()`, whose catalog settings are its own.
Needs `pip install 'icebergdo[spark]'`, Java 17 and Debian's JDBC driver packages.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlparse

from icebergdo import layout
from icebergdo.config import Config
from icebergdo.engines import spark_jars
from icebergdo.errors import BadInputError, ConfigError

EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
S3_FILEIO = "icebergdo.IcebergdoS3FileIO"
STEPS = ("compact", "manifests", "expire", "orphans")  # run order: expire after the rewrites, orphans last

_lock = threading.Lock()
_base: Any = None  # the process-wide SparkSession that owns the JVM


# -- configuration -------------------------------------------------------------------------------
def jdbc_uri(catalog_uri: str) -> tuple[str, dict[str, str]]:
    """SQLAlchemy URI → (JDBC URI, extra catalog properties such as `jdbc.user`)."""
    parsed = urlparse(catalog_uri)
    scheme = parsed.scheme.split("+", 1)[0]
    if scheme == "sqlite":
        path = catalog_uri.split(":///", 1)[1] if ":///" in catalog_uri else ""
        if not path or ":memory:" in path:
            raise ConfigError("Spark needs a file-backed SQLite catalog, not an in-memory one")
        return f"jdbc:sqlite:{os.path.abspath(path.split('?', 1)[0])}", {}
    if scheme in ("postgresql", "postgres"):
        host = parsed.hostname or "localhost"
        netloc = f"[{host}]" if ":" in host else host
        if parsed.port:
            netloc += f":{parsed.port}"
        uri = f"jdbc:postgresql://{netloc}{parsed.path}"
        props = {}
        if parsed.username:
            props["jdbc.user"] = unquote(parsed.username)
        if parsed.password:
            props["jdbc.password"] = unquote(parsed.password)
        return uri, props
    raise ConfigError(f"catalog uri scheme {parsed.scheme!r} has no JDBC mapping for Spark (use sqlite or postgresql)")


def warehouse_uri(config: Config) -> str:
    """Local warehouses as `file:/abs/path` (Hadoop's form); S3 warehouses unchanged."""
    if config.is_s3:
        return config.warehouse
    return "file:" + urlparse(config.warehouse).path


def catalog_conf(config: Config) -> dict[str, str]:
    """`spark.sql.catalog.<name>.*` settings that point Iceberg's JdbcCatalog at our catalog."""
    name = config.catalog_name
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(f"catalog name {name!r} is not a valid Spark catalog name")
    uri, extra = jdbc_uri(config.catalog_uri)
    p = f"spark.sql.catalog.{name}"
    conf = {
        p: "org.apache.iceberg.spark.SparkCatalog",
        f"{p}.type": "jdbc",
        f"{p}.uri": uri,
        f"{p}.jdbc.schema-version": "V1",
        f"{p}.warehouse": warehouse_uri(config),
        # pyiceberg commits behind Spark's back: never serve a cached table version.
        f"{p}.cache-enabled": "false",
        # pyiceberg creates the tables. Iceberg's start-up check leaves a metadata ResultSet open,
        # which on SQLite pins one pooled connection to a stale read snapshot forever.
        f"{p}.jdbc.init-catalog-tables": "false",
    }
    conf.update({f"{p}.{k}": v for k, v in extra.items()})
    if config.is_s3 or config.s3:
        s3 = config.s3
        conf[f"{p}.io-impl"] = S3_FILEIO
        if s3 is not None:
            for key, value in s3.fileio_properties().items():
                conf[f"{p}.{key}"] = value
    return conf


_s3_unavailable: str | None = None  # why the S3 FileIO is not on this JVM's classpath


def _jvm_conf() -> dict[str, str]:
    global _s3_unavailable
    jars = [spark_jars.runtime_jar(), spark_jars.shaded_jackson_jar()]
    try:
        jars.append(spark_jars.s3_fileio_jar())
        _s3_unavailable = None
    except spark_jars.SparkSetupError as e:  # a JRE without javac still serves local warehouses
        _s3_unavailable = str(e)
    for kind in ("sqlite", "postgresql"):
        try:
            jars.append(spark_jars.jdbc_driver_jar(kind))
        except spark_jars.SparkSetupError:
            pass  # checked when a catalog of that kind is opened
    classpath = os.pathsep.join(str(j) for j in jars)
    java_opts = (
        f"-Djava.library.path={spark_jars.JNI_DIR} -Duser.timezone=UTC "
        f"-Dlog4j2.configurationFile={spark_jars.log4j2_config().as_uri()}"
    )
    return {
        "spark.driver.extraClassPath": classpath,
        "spark.executor.extraClassPath": classpath,
        "spark.driver.extraJavaOptions": java_opts,
        "spark.sql.extensions": EXTENSIONS,
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.sql.adaptive.enabled": "true",
        "spark.driver.memory": os.environ.get("ICEBERGDO_SPARK_MEMORY", "1g"),
        "spark.sql.iceberg.vectorization.enabled": "true",
    }


def base_session() -> Any:
    """The process-wide SparkSession (starts the JVM on first use)."""
    global _base
    with _lock:
        if _base is not None and _base.sparkContext._jsc is not None:
            return _base
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise spark_jars.SparkSetupError("pyspark is not installed: pip install 'icebergdo[spark]'") from None
        home = spark_jars.java_home()
        if home and not os.environ.get("JAVA_HOME"):
            os.environ["JAVA_HOME"] = home
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = SparkSession.builder.master(os.environ.get("ICEBERGDO_SPARK_MASTER", "local[2]")).appName("icebergdo")
        for key, value in _jvm_conf().items():
            builder = builder.config(key, value)
        _base = builder.getOrCreate()
        _base.sparkContext.setLogLevel("ERROR")
        return _base


def stop() -> None:
    """Stop Spark and end its JVM (the next `session()` starts a fresh one)."""
    global _base
    with _lock:
        if _base is None:
            return
        from pyspark import SparkContext

        _base.stop()
        _base = None
        gateway = SparkContext._gateway
        if gateway is not None:
            proc = getattr(gateway, "proc", None)
            gateway.shutdown()
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except Exception:  # noqa: BLE001 - a JVM that will not exit is killed
                    proc.kill()
            SparkContext._gateway = None
            SparkContext._jvm = None


def session(lh: Any) -> Any:
    """A SparkSession whose catalog `<catalog_name>` is this lakehouse's catalog and warehouse.

    `spark.sql("SELECT count(*) FROM icebergdo.events.raw")` then reads the same table
    pyiceberg and DuckDB read. The session's current catalog is set to it, so
    `SELECT * FROM events.raw` works too.
    """
    config: Config = lh.config if hasattr(lh, "config") else lh
    conf = catalog_conf(config)
    spark_jars.jdbc_driver_jar("sqlite" if config.is_sqlite else "postgresql")  # a clear error if missing
    base = base_session()
    if (config.is_s3 or config.s3) and _s3_unavailable:
        raise spark_jars.SparkSetupError(f"S3 warehouses need icebergdo's S3 FileIO: {_s3_unavailable}")
    spark = base.newSession()
    for key, value in conf.items():
        spark.conf.set(key, value)
    # `USE` runs with this session active, so the catalog is loaded from this session's conf.
    spark.sql(f"USE {config.catalog_name}")
    return spark


# -- reading a table by its metadata file ----------------------------------------------------------
PATH_CATALOG = "icebergdo_path"


def read_metadata(lh: Any, metadata_location: str, spark: Any = None) -> Any:
    """A DataFrame of the table state one metadata file describes, with no catalog involved.

    Local files go through Iceberg's own path loading (`spark.read.format("iceberg").load(path)`,
    which uses Hadoop's file system). Hadoop has no S3 file system here, so for S3 the file is
    registered (`register_table`) in a scratch JdbcCatalog on a temporary SQLite file, whose
    FileIO is our S3 FileIO; the lakehouse's own catalog is not touched.
    """
    config: Config = lh.config if hasattr(lh, "config") else lh
    spark = spark or session(lh)
    if not metadata_location.startswith(("s3://", "s3a://")):
        return spark.read.format("iceberg").load(metadata_location)
    prefix = f"spark.sql.catalog.{PATH_CATALOG}"
    conf = {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.type": "jdbc",
        f"{prefix}.uri": f"jdbc:sqlite:{_scratch_dir()}/path-catalog.db",
        f"{prefix}.jdbc.schema-version": "V1",
        f"{prefix}.warehouse": config.warehouse,
        f"{prefix}.cache-enabled": "false",
        f"{prefix}.io-impl": S3_FILEIO,
    }
    conf.update({f"{prefix}.{k}": v for k, v in (config.s3.fileio_properties() if config.s3 else {}).items()})
    for key, value in conf.items():
        spark.conf.set(key, value)
    name = "t_" + hashlib.sha1(metadata_location.encode()).hexdigest()[:16]
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {PATH_CATALOG}.files")
    if not spark.catalog.tableExists(f"{PATH_CATALOG}.files.{name}"):
        spark.sql(
            f"CALL {PATH_CATALOG}.system.register_table(table => 'files.{name}', metadata_file => '{_sql_text(metadata_location)}')"
        )
    return spark.table(f"{PATH_CATALOG}.files.{name}")


_scratch: str | None = None


def _scratch_dir() -> str:
    """A per-process temporary folder (removed at exit) for the scratch path catalog."""
    global _scratch
    if _scratch is None:
        _scratch = tempfile.mkdtemp(prefix="icebergdo-spark-")
        atexit.register(shutil.rmtree, _scratch, True)
    return _scratch


def _sql_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


# -- maintenance -----------------------------------------------------------------------------------
def maintain(
    lh: Any,
    tables: list[str] | None,
    steps: set[str],
    dry_run: bool = False,
    *,
    older_than: datetime | None = None,
    retain_last: int | None = None,
    orphan_older_than: datetime | None = None,
    min_input_files: int | None = None,
    target_file_size: int | None = None,
) -> list[dict[str, Any]]:
    """Iceberg's own maintenance procedures, run by Spark on our tables.

    steps ⊆ {"compact", "manifests", "expire", "orphans"}, run in that order per table:
    compact → `rewrite_data_files` (bin-pack; a partition qualifies from `min_input_files` small
    files, Iceberg's default 5, toward `target_file_size`, default `write.target-file-size-bytes`),
    manifests → `rewrite_manifests`, expire → `expire_snapshots`, orphans → `remove_orphan_files`.
    `older_than`/`retain_last` bound snapshot expiry and `orphan_older_than` the orphan sweep;
    left out, the procedures use Iceberg's defaults, which table properties override
    (`history.expire.max-snapshot-age-ms` 5 days, `history.expire.min-snapshots-to-keep` 1;
    orphans older than 3 days), the same defaults `icebergdo maintain` uses. "retention" (an
    icebergdo job with no Iceberg procedure) is reported as skipped.
    Orphans are looked for under the table location and, since our data lives elsewhere
    (`write.data.path`), under the data path too, unless another table's files live below it. With `dry_run`, orphans are listed but not
    deleted and the other steps (which have no dry-run mode in Iceberg) are reported as skipped.
    Each table is held under the Python engine's maintenance lock (`icebergdo_locks`) while Spark
    works on it; a table another maintainer holds is reported as skipped. Returns one dict per (table, step): the procedure's output row plus table/step/engine.
    """
    kwargs = {
        "older_than": older_than,
        "retain_last": retain_last,
        "orphan_older_than": orphan_older_than,
        "min_input_files": min_input_files,
        "target_file_size": target_file_size,
    }
    unknown = set(steps) - set(STEPS) - {"retention"}
    if unknown:
        raise BadInputError(f"unknown maintenance step(s): {', '.join(sorted(unknown))} (choose from {', '.join(STEPS)})")
    known = lh.tables()
    names = list(tables) if tables else known
    for name in names:
        if name not in known:
            raise BadInputError(f"no table {name!r} (tables: {', '.join(known) or 'none'})")
    spark = session(lh)
    results: list[dict[str, Any]] = []
    for name in names:
        if "retention" in steps:
            results.append(
                {"table": name, "step": "retention", "engine": "spark", "dry_run": dry_run,
                 "skipped": "no Iceberg procedure: run it with --engine python"}
            )
        chosen = [s for s in STEPS if s in steps]
        if dry_run:
            results += _run_table(spark, lh, name, chosen, dry_run, None, kwargs)
            continue
        # The same per-table lock the Python engine takes: never two maintainers on one table.
        from icebergdo.maintenance.lock import TableLock

        lock = TableLock(lh.catalog.engine, lh.config.catalog_name, name)
        if not lock.acquire():
            results.append({"table": name, "step": "all", "engine": "spark", "dry_run": dry_run,
                            "skipped": "another maintainer holds the lock"})
            continue
        done: list[dict[str, Any]] = []
        try:
            done = _run_table(spark, lh, name, chosen, dry_run, lock, kwargs)
        finally:
            lock.release(summary={"engine": "spark", "steps": done} if done else None)
        results += done
    return results


def _run_table(
    spark: Any, lh: Any, name: str, chosen: list[str], dry_run: bool, lock: Any, kw: dict[str, Any]
) -> list[dict[str, Any]]:
    cat = lh.config.catalog_name
    ident = _quote_table(name)
    results: list[dict[str, Any]] = []
    for step in chosen:
        if lock is not None:
            lock.refresh()
        entry: dict[str, Any] = {"table": name, "step": step, "engine": "spark", "dry_run": dry_run}
        started = time.monotonic()
        if dry_run and step != "orphans":
            entry["skipped"] = "Iceberg's procedure has no dry-run mode"
        elif step == "compact":
            options = {}
            if kw["min_input_files"] is not None:
                options["min-input-files"] = str(int(kw["min_input_files"]))
            if kw["target_file_size"] is not None:
                options["target-file-size-bytes"] = str(int(kw["target_file_size"]))
            args = {"table": ident}
            if options:
                args["options"] = "map(" + ", ".join(f"'{k}', '{v}'" for k, v in options.items()) + ")"
            rows = _call(spark, cat, "rewrite_data_files", **args)
            entry.update(rows[0] if rows else {})
        elif step == "expire":
            args = {"table": ident}
            if kw["older_than"] is not None:
                args["older_than"] = _timestamp(kw["older_than"])
            if kw["retain_last"] is not None:
                args["retain_last"] = str(int(kw["retain_last"]))
            rows = _call(spark, cat, "expire_snapshots", **args)
            entry.update(rows[0] if rows else {})
        elif step == "orphans":
            orphans: list[str] = []
            locations, notes = _orphan_locations(lh, name)
            for location in locations:
                orphans += _remove_orphans(spark, lh.config, name, location, kw["orphan_older_than"], dry_run)
            entry["locations"] = locations
            entry["orphan_file_count"] = len(orphans)
            entry["orphan_files"] = orphans
            if notes:
                entry["notes"] = notes
        else:
            rows = _call(spark, cat, "rewrite_manifests", table=ident)
            entry.update(rows[0] if rows else {})
        entry["seconds"] = round(time.monotonic() - started, 3)
        results.append(entry)
    return results


def _remove_orphans(spark: Any, config: Config, name: str, location: str, older_than: datetime | None, dry_run: bool) -> list[str]:
    """`remove_orphan_files` under one location; the orphan files found (deleted unless dry run).

    The procedure refuses `older_than` within the last 24 hours (a file being written by a
    concurrent commit could look orphaned). A caller who passes a later cut-off explicitly
    gets Iceberg's DeleteOrphanFiles action instead, which the procedure's message points to.
    """
    if older_than is not None and older_than.tzinfo is None:
        older_than = older_than.replace(tzinfo=UTC)
    if older_than is None or older_than <= datetime.now(UTC) - timedelta(hours=24, minutes=1):
        args = {"table": _quote_table(name), "location": f"'{_sql_text(location)}'", "dry_run": str(dry_run).lower()}
        if older_than is not None:
            args["older_than"] = _timestamp(older_than)
        if config.is_s3:
            args["prefix_listing"] = "true"  # list through our FileIO: Hadoop has no s3 file system
        return [r["orphan_file_location"] for r in _call(spark, config.catalog_name, "remove_orphan_files", **args)]
    jvm = spark._jvm
    jspark = spark._jsparkSession
    table = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(jspark, f"{config.catalog_name}.{name}")
    action = (
        jvm.org.apache.iceberg.spark.actions.SparkActions.get(jspark)
        .deleteOrphanFiles(table)
        .location(location)
        .olderThan(int(older_than.timestamp() * 1000))
    )
    if config.is_s3:
        action = action.usePrefixListing(True)
    if dry_run:
        action = action.deleteWith(jvm.icebergdo.IcebergdoS3FileIO.noopDelete())
    return [str(p) for p in action.execute().orphanFileLocations()]


def _call(spark: Any, catalog: str, procedure: str, **args: str) -> list[dict[str, Any]]:
    text = ", ".join(f"{k} => {v}" for k, v in args.items())
    return [r.asDict(recursive=True) for r in spark.sql(f"CALL {catalog}.system.{procedure}({text})").collect()]


def _quote_table(name: str) -> str:
    ns, table = layout.split_identifier(name)
    return f"'`{ns}`.`{table}`'"


def _timestamp(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return "TIMESTAMP '" + when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"


def _orphan_locations(lh: Any, name: str) -> tuple[list[str], list[str]]:
    """Where to look for orphans: the table location, plus `write.data.path` when it lies outside.

    A location holding another table's location or data path is skipped (with a note): Iceberg
    would take that table's files for orphans of this one.
    """

    def prefixes(table: Any) -> list[str]:
        location = table.metadata.location.rstrip("/")
        data = (table.properties.get("write.data.path") or "").rstrip("/")
        return [location] + ([data] if data and not _under(data, location) else [])

    mine = prefixes(lh.table(name))
    others = [(other, p) for other in lh.tables() if other != name for p in prefixes(lh.table(other))]
    keep, notes = [], []
    for location in mine:
        clash = next((other for other, p in others if _under(p, location)), None)
        if clash:
            notes.append(f"skipped {location}: table {clash} keeps files below it")
        else:
            keep.append(location)
    return keep, notes


def _under(path: str, prefix: str) -> bool:
    def norm(p: str) -> str:
        return re.sub(r"^file:/+", "file:///", p.rstrip("/"))

    p, q = norm(path), norm(prefix)
    return p == q or p.startswith(q + "/")


def error_summary(exc: BaseException) -> str:
    """The first meaningful line of a Spark/py4j error (they carry whole Java stack traces)."""
    text = getattr(exc, "desc", None) or str(exc)
    for line in str(text).splitlines():
        line = line.strip().lstrip(":").strip()
        if line and not line.startswith(("at ", "py4j", "An error occurred while calling")):
            return line[:500]
    return type(exc).__name__
