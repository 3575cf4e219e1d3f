"""`icebergdo spark-sql` (one SQL statement through Spark) and `icebergdo spark conf` (settings for your Spark)."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from icebergdo.cli import args as flags
from icebergdo.cli import output
from icebergdo.errors import IcebergdoError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "spark-sql",
        help="run SQL with Apache Spark over the same catalog and warehouse (needs icebergdo[spark] and Java)",
        description="Run one statement with Spark (local mode) and Iceberg's SparkCatalog over this "
        "lakehouse's catalog. The current catalog is the lakehouse's (default name `icebergdo`), so "
        "`SELECT * FROM events.raw` works, and so do Iceberg's procedures: "
        "`CALL icebergdo.system.rewrite_data_files(table => 'events.raw')`. Starting Spark takes a few seconds.",
    )
    p.add_argument("sql", help='e.g. "SELECT type, count(*) FROM events.raw GROUP BY 1"')
    flags.add_format(p)
    flags.add_limit(p, default=10_000)
    p.set_defaults(handler=cmd_spark_sql)

    p = sub.add_parser("spark", help="Spark helpers: `spark conf` prints the settings for your own Spark (docs/spark.md)")
    spark_sub = p.add_subparsers(dest="spark_command", metavar="SUBCOMMAND", required=True)
    c = spark_sub.add_parser(
        "conf",
        help="print spark-defaults.conf (or spark-submit --conf) lines that attach a Spark to this lakehouse",
        description="The settings a Spark you start yourself (a cluster, spark-submit, spark-shell) needs to "
        "read and write this lakehouse: Maven packages (Iceberg runtime, JDBC driver, iceberg-aws-bundle for S3), "
        "icebergdo's jar (ADR file layout for Spark's writes; fallback S3 FileIO), the SQL extensions and the catalog. "
        "Secrets are masked unless --show-secrets.",
    )
    c.add_argument("--format", choices=["defaults", "submit"], default="defaults", help="spark-defaults.conf lines (default) or spark-submit arguments")
    c.add_argument(
        "--fileio",
        choices=["iceberg", "icebergdo"],
        default="iceberg",
        help="S3 FileIO: Iceberg's S3FileIO from iceberg-aws-bundle (default), or icebergdo's fallback in its jar",
    )
    c.add_argument("--no-jar", action="store_true", help="leave icebergdo's jar out (Spark then writes Iceberg's default file layout)")
    c.add_argument("--show-secrets", action="store_true", help="print secrets (S3 secret key, database password) instead of ***")
    c.set_defaults(handler=cmd_spark_conf)


def cmd_spark_sql(args: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.engines import spark

    session = spark.session(ctx.lh)
    try:
        df = session.sql(args.sql)
        header = list(df.columns)
        rows = [tuple(r) for r in (df.limit(args.limit) if args.limit else df).collect()] if header else []
    except Exception as e:
        if isinstance(e, IcebergdoError):
            raise
        raise IcebergdoError(f"spark-sql failed: {spark.error_summary(e)}") from None
    if not header:
        return 0
    output.emit(header, rows, args.format)
    return 0


def cmd_spark_conf(args: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.engines import spark, spark_jars

    config = ctx.config
    jar = None
    if not args.no_jar:
        try:
            jar = str(spark_jars.icebergdo_jar())
        except spark_jars.SparkSetupError as e:
            print(f"icebergdo: note: without icebergdo's jar ({e}); Spark will write Iceberg's default file layout", file=sys.stderr)
    pairs = spark.submit_conf(config, fileio=args.fileio, show_secrets=args.show_secrets, jar=jar)
    if args.format == "submit":
        lines = []
        for key, value in pairs:
            if key == "spark.jars.packages":
                lines.append(f"--packages {shlex.quote(value)}")
            elif key == "spark.jars":
                lines.append(f"--jars {shlex.quote(value)}")
            else:
                lines.append(f"--conf {shlex.quote(f'{key}={value}')}")
        print(" \\\n".join(lines))
    else:
        print(f"# icebergdo: {config.catalog_name} catalog of {config.source}")
        if jar:
            print("# spark.jars: copy this jar to every machine of the cluster (or to shared storage) and adjust the path")
        width = max(len(k) for k, _ in pairs)
        for key, value in pairs:
            print(f"{key:<{width}}  {value}")
    if not args.show_secrets:
        print("icebergdo: secrets are masked (***); --show-secrets prints them", file=sys.stderr)
    return 0
