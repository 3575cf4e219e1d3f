"""Core commands: init, tables, query, demo."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from icebergdo.errors import IcebergdoError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create the catalog, the warehouse (bucket) and the events.raw table")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("tables", help="list tables with their metadata location, snapshot and row count")
    p.add_argument("--json", action="store_true", help="machine-readable: [{table, metadata_location, snapshot_id, rows}]")
    p.set_defaults(handler=cmd_tables)

    p = sub.add_parser(
        "query",
        help="run SQL with DuckDB over one view per table",
        description="Run SQL with DuckDB's iceberg extension. Views: `events` (= events.raw) and "
        "`namespace.table` for every table, as of the moment the command starts.",
    )
    p.add_argument("sql", help='e.g. "SELECT type, count(*) FROM events GROUP BY 1"')
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format (default: table)")
    p.set_defaults(handler=cmd_query)

    p = sub.add_parser("demo", help="ingest a realistic day of mixed events and show what landed where")
    p.add_argument("--events", type=int, default=50_000, help="how many events to generate (default 50000)")
    p.add_argument("--day", default=None, help="UTC day to generate, YYYY-MM-DD (default: yesterday)")
    p.set_defaults(handler=cmd_demo)


def cmd_init(args: argparse.Namespace, ctx: Any) -> int:
    config = ctx.config
    print(f"catalog:   {config.redacted()['catalog_uri']} (name {config.catalog_name})")
    print(f"warehouse: {config.warehouse}")
    if config.is_s3:
        from icebergdo.dev.checks import init_warehouse

        failed = False
        for check in init_warehouse(config):
            print(f"  {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
            failed |= not check.ok
        if failed:
            raise IcebergdoError("warehouse checks failed (see above; `icebergdo doctor` explains each)")
    table = ctx.lh.events_table()
    print(f"table events.raw ready: {table.metadata_location}")
    return 0


def cmd_tables(args: argparse.Namespace, ctx: Any) -> int:
    rows = ctx.lh.describe_tables()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no tables yet (run `icebergdo init` or `icebergdo ingest`)")
        return 0
    print_table(["table", "rows", "snapshot_id", "metadata_location"], [[r[k] for k in ("table", "rows", "snapshot_id", "metadata_location")] for r in rows])
    return 0


def cmd_query(args: argparse.Namespace, ctx: Any) -> int:
    import duckdb

    con = ctx.lh.duckdb()
    try:
        cur = con.execute(args.sql)
    except duckdb.Error as e:
        raise IcebergdoError(f"query failed: {e}") from None
    if cur.description is None:
        return 0
    print_rows([d[0] for d in cur.description], cur.fetchall(), args.format)
    return 0


def cmd_demo(args: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.dev import demo

    lh = ctx.lh
    day = datetime.fromisoformat(args.day).replace(tzinfo=UTC) if args.day else datetime.now(UTC) - timedelta(days=1)
    print(f"lakehouse: {lh.config.warehouse}")
    print(f"generating {args.events:,} events for {day:%Y-%m-%d} (webhook, rpc, ws, custom, cdc) …")
    batch = demo.generate_day(day, args.events)
    t0 = time.perf_counter()
    result = lh.append_events(batch)
    took = time.perf_counter() - t0
    print(f"ingested {result.rows:,} events in {took:.2f}s: 1 commit, {result.files} data files (snapshot {result.snapshot_id})\n")
    con = lh.duckdb()
    print("events per hour (DuckDB iceberg_scan):")
    rows = con.execute(
        "SELECT strftime(date_trunc('hour', ts AT TIME ZONE 'UTC'), '%Y-%m-%d %H:00') AS hour, count(*) AS events, "
        "count(*) FILTER (WHERE type = 'webhook') AS webhook, count(*) FILTER (WHERE type = 'rpc') AS rpc, "
        "count(*) FILTER (WHERE type LIKE 'collection.%') AS cdc FROM events "
        "WHERE ts >= ? AND ts < ? GROUP BY 1 ORDER BY 1",
        [day.replace(hour=0, minute=0, second=0, microsecond=0), day.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)],
    ).fetchall()
    print_table(["hour", "events", "webhook", "rpc", "cdc"], rows)
    files = [task.file.file_path for task in lh.table("events.raw").scan().plan_files()]
    print(f"\n{len(files)} data files in the ADR layout, e.g.:")
    for path in sorted(files)[:3]:
        print(f"  {path}")
    print(f"metadata: {lh.table('events.raw').metadata_location}")
    others = [t for t in lh.tables() if t != "events.raw"]
    if others:
        print(f"collection.* events with a namespace and collection were also applied as CDC: {', '.join(others)}")
    print('\ntry: icebergdo --home', lh.config.home or '…', 'query "SELECT type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC"')
    return 0


def print_rows(header: list[str], rows: list[Any], fmt: str) -> None:
    """Query results as `table`, `csv` or `json` (shared by `query` and `spark-sql`)."""
    if fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(header)
        w.writerows(rows)
    elif fmt == "json":
        print(json.dumps([dict(zip(header, r, strict=False)) for r in rows], default=str, indent=1))
    else:
        print_table(header, rows)


def print_table(header: list[str], rows: list[Any]) -> None:
    """Aligned plain-text table (no dependency, readable in logs)."""
    text = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)))
    print("  ".join("-" * w for w in widths))
    for r in text:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)))
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
