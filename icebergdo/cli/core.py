"""Core commands: init, tables, query, demo."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from icebergdo.cli import COMMANDS, args, output
from icebergdo.cli.output import JSON, NUMBER, TEXT, Column
from icebergdo.errors import BadInputError, IcebergdoError

QUERY_CHUNK = 2048


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help=COMMANDS["init"][1])
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("tables", help=COMMANDS["tables"][1])
    args.add_format(p)
    p.set_defaults(handler=cmd_tables)

    p = sub.add_parser(
        "query",
        help=COMMANDS["query"][1],
        description="Run SQL with DuckDB's iceberg extension. Views: `events` (= events.raw) and "
        "`namespace.table` for every table, as of the moment the command starts.",
    )
    p.add_argument("sql", help='e.g. "SELECT type, count(*) FROM events GROUP BY 1"')
    args.add_format(p)
    args.add_limit(p)
    p.set_defaults(handler=cmd_query)

    p = sub.add_parser("demo", help=COMMANDS["demo"][1])
    p.add_argument("--events", type=args.count(minimum=1), default=50_000, help="how many events to generate (default 50000)")
    p.add_argument("--day", default=None, help="UTC day to generate, YYYY-MM-DD (default: yesterday)")
    args.add_quiet(p)
    p.set_defaults(handler=cmd_demo)


def cmd_init(a: argparse.Namespace, ctx: Any) -> int:
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


TABLE_COLUMNS = [Column("table"), Column("rows", NUMBER), Column("snapshot_id"), Column("metadata_location")]


def cmd_tables(a: argparse.Namespace, ctx: Any) -> int:
    rows = ctx.tables.describe_tables()
    output.emit_dicts(TABLE_COLUMNS, rows, a.format, empty="no tables yet (run `icebergdo init` or `icebergdo ingest`)")
    return 0


def cmd_query(a: argparse.Namespace, ctx: Any) -> int:
    """Stream the result: DuckDB computes it lazily and `--limit` is pushed into the query."""
    import duckdb

    # One statement, as of the moment the command starts: `iceberg_scan` views are exactly that, without
    # the in-process REST server a live ATTACH of a SQL catalog needs (~0.4 s). A REST catalog attaches.
    con = ctx.lh.duckdb(live=ctx.lh.config.is_rest)
    try:
        rel = con.sql(a.sql)
    except (duckdb.IOException, duckdb.HTTPException):
        raise  # storage: translated by the CLI with a diagnosis
    except duckdb.Error as e:
        raise BadInputError(f"query failed: {' '.join(str(e).split())}") from None
    if rel is None:  # a statement without a result (CREATE, SET, ...)
        return 0
    spec = [Column(name, JSON if str(kind) == "JSON" or name in output.JSON_COLUMNS else TEXT) for name, kind in zip(rel.columns, rel.types, strict=True)]
    if a.limit:
        rel = rel.limit(a.limit + 1)  # one more tells whether rows were left out
    shown = 0
    more = False

    def rows() -> Any:
        nonlocal shown, more
        while True:
            try:
                chunk = rel.fetchmany(QUERY_CHUNK)
            except (duckdb.IOException, duckdb.HTTPException):
                raise
            except duckdb.Error as e:
                raise BadInputError(f"query failed: {' '.join(str(e).split())}") from None
            if not chunk:
                return
            for row in chunk:
                if a.limit and shown >= a.limit:
                    more = True
                    return
                shown += 1
                yield row

    output.emit(spec, rows(), a.format, count=False)
    if a.format == "table":
        print(f"(first {shown:,} rows; --limit 0 for all)" if more else f"({shown:,} row{'s' if shown != 1 else ''})")
    return 0


def cmd_demo(a: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.dev import demo

    lh = ctx.lh
    try:
        day = datetime.fromisoformat(a.day).replace(tzinfo=UTC) if a.day else datetime.now(UTC) - timedelta(days=1)
    except ValueError:
        raise BadInputError(f"--day: expected YYYY-MM-DD, got {a.day!r}") from None
    if not a.quiet:
        print(f"lakehouse: {lh.config.warehouse}")
        print(f"generating {a.events:,} events for {day:%Y-%m-%d} (webhook, rpc, ws, custom, cdc) …")
    batch = demo.generate_day(day, a.events)
    t0 = time.perf_counter()
    result = lh.append_events(batch)
    took = time.perf_counter() - t0
    print(f"ingested {result.rows:,} events in {took:.2f}s: 1 commit, {result.files} data files (snapshot {result.snapshot_id})")
    if a.quiet:
        return 0
    print()
    con = lh.duckdb()
    print("events per hour (DuckDB iceberg_scan):")
    rows = con.execute(
        "SELECT strftime(date_trunc('hour', ts AT TIME ZONE 'UTC'), '%Y-%m-%d %H:00') AS hour, count(*) AS events, "
        "count(*) FILTER (WHERE type = 'webhook') AS webhook, count(*) FILTER (WHERE type = 'rpc') AS rpc, "
        "count(*) FILTER (WHERE type LIKE 'collection.%') AS cdc FROM events "
        "WHERE ts >= ? AND ts < ? GROUP BY 1 ORDER BY 1",
        [day.replace(hour=0, minute=0, second=0, microsecond=0), day.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)],
    ).fetchall()
    output.print_table([Column("hour")] + [Column(c, NUMBER) for c in ("events", "webhook", "rpc", "cdc")], rows)
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
