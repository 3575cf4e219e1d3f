"""Apache Spark on the lakehouse: the same catalog and warehouse, through Iceberg's own Java code.

`session(lh)` gives a SparkSession whose catalog `<config.catalog_name>` is the lakehouse's:
Iceberg's JdbcCatalog over the very database pyiceberg's SqlCatalog uses (SQLite or PostgreSQL),
so both see the same tables and commits. `session(lh, spark=yours)` configures a session you
already have (a cluster's) the same way; `submit_conf(config)` is the same configuration as
`spark-submit` / `spark-defaults.conf` lines (`icebergdo spark conf`).

Two Java pieces come from icebergdo's own jar (`spark_jars.icebergdo_jar()`), when the JVM has it:
- the catalog `icebergdo.IcebergdoJdbcCatalog` (a JdbcCatalog) hands out the ADR layout to Java
  writers for the tables icebergdo created, without touching their properties, so Spark's INSERTs
  and compactions land in `events/YYYY/MM/DD/HH/<ulid>.parquet` while other engines keep working;
- `icebergdo.IcebergdoS3FileIO`, the S3 FileIO used when Iceberg's own `S3FileIO` cannot run
  (no iceberg-aws-bundle / AWS SDK on the classpath).
Without the jar, a session falls back to the plain JdbcCatalog (Iceberg's default file layout).

One JVM per Python process: the first local session starts it with every jar on the driver
classpath; each lakehouse then gets its own `newSession()`, whose catalog settings are its own.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlparse

from icebergdo import layout
from icebergdo.config import Config, S3Settings
from icebergdo.engines import spark_jars
from icebergdo.errors import BadInputError, ConfigError, SparkSetupError
from icebergdo.redact import MASK, mask_key

EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
SPARK_CATALOG = "org.apache.iceberg.spark.SparkCatalog"
CATALOG_IMPL = "icebergdo.IcebergdoJdbcCatalog"  # our jar: JdbcCatalog + the ADR layout
S3_FILEIO = "icebergdo.IcebergdoS3FileIO"  # our jar: the fallback S3 FileIO
ICEBERG_S3_FILEIO = "org.apache.iceberg.aws.s3.S3FileIO"  # in the runtime jar; needs the AWS SDK
AWS_SDK_PROBE = "software.amazon.awssdk.services.s3.S3Client"
FILEIO_CHOICES = ("auto", "iceberg", "icebergdo")
FILE_PREFIX_PROPERTY = "icebergdo.write.file-prefix"  # read by the catalog, see AdrLocationProvider.java
CATALOG_NAME_PROPERTY = "icebergdo.catalog-name"
ICEBERG_VERSION = "1.10.2"
PACKAGES = {
    "runtime": f"org.apache.iceberg:iceberg-spark-runtime-3.5_2.12:{ICEBERG_VERSION}",
    "aws": f"org.apache.iceberg:iceberg-aws-bundle:{ICEBERG_VERSION}",
    "postgresql": "org.postgresql:postgresql:42.7.4",
    "sqlite": "org.xerial:sqlite-jdbc:3.50.3.0",
}
SECRET_KEYS = ("jdbc.password", "s3.secret-access-key", "s3.session-token")

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


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(f"catalog name {name!r} is not a valid Spark catalog name")
    return name


def s3_properties(s3: S3Settings, fileio: str) -> dict[str, str]:
    """The FileIO properties of one S3 store, for our FileIO or Iceberg's `S3FileIO`.

    Ours takes pyiceberg's keys; Iceberg's takes `s3.path-style-access` and `client.region`.
    """
    props = {k: v for k, v in s3.fileio_properties().items() if k != "py-io-impl"}
    if fileio == "iceberg":
        props.pop("s3.force-virtual-addressing", None)
        props.pop("s3.connect-timeout", None)
        props.pop("s3.request-timeout", None)
        props["s3.path-style-access"] = str(s3.path_style).lower()
        props["client.region"] = props.pop("s3.region")
    return props


def catalog_conf(
    config: Config,
    *,
    name: str | None = None,
    fileio: str = "icebergdo",
    adr: bool = True,
    file_prefix: str | None = None,
) -> dict[str, str]:
    """`spark.sql.catalog.<name>.*` settings that point Iceberg at this lakehouse's catalog.

    `name` defaults to the catalog name; another name (a second catalog, e.g. for compaction
    with `file_prefix`) still reads and writes the rows of `config.catalog_name`, which needs
    our catalog class (`adr=True`). `fileio` is "icebergdo" (our S3 FileIO) or "iceberg"
    (Iceberg's S3FileIO, which needs the AWS SDK); local warehouses use Hadoop's file system.
    Extra catalog properties come from the `[spark.catalog]` config section.
    """
    name = _check_name(name or config.catalog_name)
    _check_name(config.catalog_name)
    if fileio not in ("iceberg", "icebergdo"):
        raise BadInputError(f"unknown S3 FileIO {fileio!r} (choose iceberg or icebergdo)")
    if not adr and (name != config.catalog_name or file_prefix):
        raise SparkSetupError("a second catalog name or a file prefix needs icebergdo's catalog class (its jar is not on the classpath)")
    uri, extra = jdbc_uri(config.catalog_uri)
    p = f"spark.sql.catalog.{name}"
    conf = {p: SPARK_CATALOG}
    if adr:
        conf[f"{p}.catalog-impl"] = CATALOG_IMPL
        conf[f"{p}.{CATALOG_NAME_PROPERTY}"] = config.catalog_name
    else:
        conf[f"{p}.type"] = "jdbc"
    conf.update(
        {
            f"{p}.uri": uri,
            f"{p}.jdbc.schema-version": "V1",
            f"{p}.warehouse": warehouse_uri(config),
            # pyiceberg commits behind Spark's back: never serve a cached table version.
            f"{p}.cache-enabled": "false",
            # pyiceberg creates the tables. Iceberg's start-up check leaves a metadata ResultSet open,
            # which on SQLite pins one pooled connection to a stale read snapshot forever.
            f"{p}.jdbc.init-catalog-tables": "false",
        }
    )
    if file_prefix:
        conf[f"{p}.{FILE_PREFIX_PROPERTY}"] = file_prefix
    conf.update({f"{p}.{k}": v for k, v in extra.items()})
    if config.is_s3 or config.s3:
        conf[f"{p}.io-impl"] = ICEBERG_S3_FILEIO if fileio == "iceberg" else S3_FILEIO
        if config.s3 is not None:
            conf.update({f"{p}.{k}": v for k, v in s3_properties(config.s3, fileio).items()})
    conf.update({f"{p}.{k}": str(v) for k, v in extra_catalog_properties(config).items()})
    return conf


def extra_catalog_properties(config: Config) -> dict[str, str]:
    """`[spark.catalog]`: catalog/FileIO properties added to every Spark catalog of this lakehouse."""
    section = config.section("spark").get("catalog") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{config.source}: [spark.catalog] must be a table of catalog properties")
    bad = [k for k, v in section.items() if isinstance(v, (dict, list))]
    if bad:
        raise ConfigError(f"{config.source}: [spark.catalog] {bad[0]}: expected a string or number")
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in section.items()}


def masked(key: str, value: str) -> str:
    """A conf value for display: secrets masked, access key ids shortened."""
    leaf = key.rsplit(".", 2)
    tail = ".".join(leaf[-2:])
    if tail in SECRET_KEYS:
        return MASK
    if tail == "s3.access-key-id":
        return mask_key(value) or value
    return value


def submit_conf(config: Config, *, fileio: str = "iceberg", show_secrets: bool = False, jar: str | None = None) -> list[tuple[str, str]]:
    """The settings a Spark you start yourself needs for this lakehouse, as (key, value) pairs.

    For `spark-defaults.conf` or `spark-submit --conf`: the Iceberg runtime, the JDBC driver and,
    with `fileio="iceberg"` (the default here), iceberg-aws-bundle as Maven packages; icebergdo's
    jar (`jar`, the ADR layout and the fallback FileIO) in `spark.jars`; the SQL extensions; the
    catalog; the lakehouse as the default catalog. Secrets are masked unless `show_secrets`.
    """
    packages = [PACKAGES["runtime"], PACKAGES["sqlite" if config.is_sqlite else "postgresql"]]
    if fileio == "iceberg" and (config.is_s3 or config.s3):
        packages.append(PACKAGES["aws"])
    pairs: list[tuple[str, str]] = [("spark.jars.packages", ",".join(packages))]
    if jar:
        pairs.append(("spark.jars", jar))
    pairs += [("spark.sql.extensions", EXTENSIONS), ("spark.sql.defaultCatalog", config.catalog_name)]
    pairs += sorted(catalog_conf(config, fileio=fileio, adr=bool(jar)).items())
    if not show_secrets:
        pairs = [(k, masked(k, v)) for k, v in pairs]
    return pairs


def _jvm_conf(extra_jars: list[str]) -> dict[str, str]:
    jars = [str(spark_jars.runtime_jar()), str(spark_jars.shaded_jackson_jar())]
    try:
        jars.append(str(spark_jars.icebergdo_jar()))
    except SparkSetupError:
        pass  # a JRE without javac still serves local warehouses, in Iceberg's default layout
    for kind in ("sqlite", "postgresql"):
        try:
            jars.append(str(spark_jars.jdbc_driver_jar(kind)))
        except SparkSetupError:
            pass  # checked when a catalog of that kind is opened
    classpath = os.pathsep.join(jars + extra_jars)
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
    """The process-wide local SparkSession (starts the JVM on first use).

    `ICEBERGDO_SPARK_MASTER` (default `local[2]`), `ICEBERGDO_SPARK_MEMORY` (default `1g`) and
    `ICEBERGDO_SPARK_JARS` (more jars for the classpath, e.g. iceberg-aws-bundle, `:`-separated)
    shape it.
    """
    global _base
    with _lock:
        if _base is not None and _base.sparkContext._jsc is not None:
            return _base
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise SparkSetupError("pyspark is not installed: pip install 'icebergdo[spark]'") from None
        home = spark_jars.java_home()
        if home and not os.environ.get("JAVA_HOME"):
            os.environ["JAVA_HOME"] = home
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        extra = [j for j in os.environ.get("ICEBERGDO_SPARK_JARS", "").split(os.pathsep) if j]
        missing = [j for j in extra if not os.path.exists(j)]
        if missing:
            raise SparkSetupError(f"ICEBERGDO_SPARK_JARS names a missing file: {missing[0]}")
        builder = SparkSession.builder.master(os.environ.get("ICEBERGDO_SPARK_MASTER", "local[2]")).appName("icebergdo")
        for key, value in _jvm_conf(extra).items():
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


@dataclass(frozen=True)
class Capabilities:
    """What a session's JVM can load: decides the catalog class and the S3 FileIO."""

    icebergdo: bool  # our jar (ADR layout, fallback FileIO)
    aws_sdk: bool  # Iceberg's S3FileIO can run
    extensions: bool  # Iceberg's SQL extensions (CALL procedures)


def class_loadable(spark: Any, name: str) -> bool:
    jvm = spark._jvm
    try:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader() or jvm.java.lang.ClassLoader.getSystemClassLoader()
        jvm.java.lang.Class.forName(name, False, loader)
        return True
    except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        return False


def capabilities(spark: Any) -> Capabilities:
    exts = spark.sparkContext.getConf().get("spark.sql.extensions", "") or ""
    return Capabilities(
        icebergdo=class_loadable(spark, CATALOG_IMPL),
        aws_sdk=class_loadable(spark, AWS_SDK_PROBE),
        extensions=EXTENSIONS in exts,
    )


def choose_fileio(config: Config, caps: Capabilities, fileio: str = "auto") -> str:
    """Iceberg's own S3FileIO when the AWS SDK is there (or asked for), else ours."""
    if fileio not in FILEIO_CHOICES:
        raise BadInputError(f"unknown S3 FileIO {fileio!r} (choose {', '.join(FILEIO_CHOICES)})")
    if fileio == "auto":
        fileio = "iceberg" if caps.aws_sdk else "icebergdo"
    if not (config.is_s3 or config.s3):
        return fileio
    if fileio == "iceberg" and not caps.aws_sdk:
        raise SparkSetupError(f"Iceberg's S3FileIO needs the AWS SDK ({PACKAGES['aws']}) on Spark's classpath")
    if fileio == "icebergdo" and not caps.icebergdo:
        raise SparkSetupError(
            "S3 warehouses need Iceberg's S3FileIO (add iceberg-aws-bundle) or icebergdo's jar on Spark's classpath "
            "(`icebergdo spark conf` prints both)"
        )
    return fileio


def session(lh: Any, spark: Any = None, *, fileio: str = "auto", use_catalog: bool | None = None) -> Any:
    """A SparkSession whose catalog `<catalog_name>` is this lakehouse's catalog and warehouse.

    Without `spark`: a new light session on the process-wide local JVM, whose current catalog is
    the lakehouse's (`SELECT * FROM events.raw` works). With `spark` (your own, e.g. a cluster's):
    that session is configured in place and returned; its current catalog is left alone unless
    `use_catalog=True`. Its JVM needs the Iceberg runtime and the JDBC driver; with icebergdo's jar
    Java writes keep the ADR layout, and S3 goes through Iceberg's S3FileIO when the AWS SDK is
    there (`fileio="auto"`), else through ours.
    """
    config: Config = lh.config if hasattr(lh, "config") else lh
    if spark is None:
        spark_jars.jdbc_driver_jar("sqlite" if config.is_sqlite else "postgresql")  # a clear error if missing
        spark = base_session().newSession()
        use = True if use_catalog is None else use_catalog
    else:
        use = bool(use_catalog)
    caps = capabilities(spark)
    conf = catalog_conf(config, fileio=choose_fileio(config, caps, fileio), adr=caps.icebergdo)
    for key, value in conf.items():
        spark.conf.set(key, value)
    if use:
        # `USE` runs with this session active, so the catalog is loaded from this session's conf.
        spark.sql(f"USE {config.catalog_name}")
    return spark


def add_catalog(spark: Any, config: Config, name: str, *, file_prefix: str | None = None, fileio: str = "auto") -> str:
    """Register this lakehouse once more in `spark` under `name` (e.g. with a data-file prefix)."""
    caps = capabilities(spark)
    if not caps.icebergdo:
        raise SparkSetupError(f"a second catalog ({name}) needs icebergdo's jar on Spark's classpath")
    conf = catalog_conf(config, name=name, fileio=choose_fileio(config, caps, fileio), file_prefix=file_prefix)
    for key, value in conf.items():
        spark.conf.set(key, value)
    return name


# -- procedures ------------------------------------------------------------------------------------
def call(spark: Any, catalog: str, procedure: str, **args: str) -> list[dict[str, Any]]:
    """`CALL <catalog>.system.<procedure>(k => v, ...)`; the output rows as dicts. Values are SQL literals."""
    text = ", ".join(f"{k} => {v}" for k, v in args.items())
    return [r.asDict(recursive=True) for r in spark.sql(f"CALL {catalog}.system.{procedure}({text})").collect()]


def table_literal(name: str) -> str:
    """A table argument of a procedure: ns.table quoted as a SQL string of backquoted parts."""
    ns, table = layout.split_identifier(name)
    return f"'`{ns}`.`{table}`'"


def text_literal(text: str) -> str:
    return "'" + _sql_text(text) + "'"


def timestamp_literal(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return "TIMESTAMP '" + when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"


def map_literal(options: dict[str, str]) -> str:
    return "map(" + ", ".join(f"{text_literal(k)}, {text_literal(v)}" for k, v in options.items()) + ")"


# -- reading a table by its metadata file ----------------------------------------------------------
PATH_CATALOG = "icebergdo_path"


def read_metadata(lh: Any, metadata_location: str, spark: Any = None) -> Any:
    """A DataFrame of the table state one metadata file describes, with no catalog involved.

    Local files go through Iceberg's own path loading (`spark.read.format("iceberg").load(path)`,
    which uses Hadoop's file system). Hadoop has no S3 file system here, so for S3 the file is
    registered (`register_table`) in a scratch JdbcCatalog on a temporary SQLite file, whose
    FileIO is the session's S3 FileIO; the lakehouse's own catalog is not touched.
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
    }
    fileio = choose_fileio(config, capabilities(spark))
    conf[f"{prefix}.io-impl"] = ICEBERG_S3_FILEIO if fileio == "iceberg" else S3_FILEIO
    conf.update({f"{prefix}.{k}": v for k, v in (s3_properties(config.s3, fileio) if config.s3 else {}).items()})
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


def error_summary(exc: BaseException) -> str:
    """The first meaningful line of a Spark/py4j error (they carry whole Java stack traces)."""
    text = getattr(exc, "desc", None) or str(exc)
    for line in str(text).splitlines():
        line = line.strip().lstrip(":").strip()
        if line and not line.startswith(("at ", "py4j", "An error occurred while calling")):
            return line[:500]
    return type(exc).__name__
