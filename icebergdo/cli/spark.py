"""`icebergdo spark-sql`: one SQL statement through Apache Spark and Iceberg's Java library."""

from __future__ import annotations

import argparse
from typing import Any

from icebergdo.cli.core import print_rows
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
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format (default: table)")
    p.add_argument("--limit", type=int, default=10_000, help="print at most this many rows (default 10000)")
    p.set_defaults(handler=cmd_spark_sql)


def cmd_spark_sql(args: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.engines import spark

    if args.limit < 0:
        raise IcebergdoError("--limit must be >= 0")
    session = spark.session(ctx.lh)
    try:
        df = session.sql(args.sql)
        header = list(df.columns)
        rows = [tuple(r) for r in df.limit(args.limit).collect()] if header else []
    except Exception as e:
        if isinstance(e, IcebergdoError):
            raise
        raise IcebergdoError(f"spark-sql failed: {spark.error_summary(e)}") from None
    if not header:
        return 0
    print_rows(header, rows, args.format)
    return 0
