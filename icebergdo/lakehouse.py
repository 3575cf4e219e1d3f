"""`Lakehouse`: the one entry point. Config → catalog → tables; writers, CDC and maintenance hang off it.

The facade is the only module that knows every feature: it wires them together (CDC routing is a
post-commit hook of `events.raw`, registered here) and hands each one the `Tables` it works on.
Nothing below it imports it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema

from icebergdo import layout
from icebergdo.cdc import ApplyResult, CdcRouter, Collection, route_pending
from icebergdo.config import Config
from icebergdo.dedupe import COLUMN_PROPERTY as DEDUPE_PROPERTY
from icebergdo.dedupe import Dedupe
from icebergdo.engines import duck
from icebergdo.errors import BadInputError, IcebergdoError
from icebergdo.maintenance import MaintenanceOptions, StepReport, health, maintain
from icebergdo.maintenance import dedupe as maintenance_dedupe
from icebergdo.schema import to_events
from icebergdo.tables import AppendResult, Tables
from icebergdo.times import DEFAULT_RULE, TimeRule, parse_duration
from icebergdo.upkeep import Upkeep
from icebergdo.writer import Writer

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import SparkSession

__all__ = ["AppendResult", "ApplyResult", "Lakehouse"]

log = logging.getLogger(__name__)
DEDUPE_VIEWS_TTL_S = 10.0  # how long `duckdb()` reuses which tables deduplicate before reading their properties again


class Lakehouse(Tables):
    """A catalog plus a warehouse. Open one with `Lakehouse.open(home_or_config)`."""

    def __init__(self, config: Config, catalog: Catalog | None = None) -> None:
        super().__init__(config, catalog)
        self.on_commit(CdcRouter(self))  # cdc.* / collection.* events → their collections (docs/cdc.md)
        self.upkeep = Upkeep(self)  # streaming tables keep themselves bounded (docs/writer.md, "Table upkeep")
        self._dedupe_cache: tuple[float, list[tuple[str, Any]]] | None = None  # for the `_dedup` views of duckdb()
        self.on_commit(self.upkeep)

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, where: str | os.PathLike[str] | Config | None = None, *, config: str | None = None) -> Lakehouse:
        """`Lakehouse.open("./lakehouse")` (embedded), `open(config="r2.toml")`, or `open(Config(...))`."""
        if isinstance(where, Config):
            return cls(where)
        if where is not None:
            return cls(Config.from_home(where) if config is None else Config.from_file(config))
        return cls(Config.resolve(config=config))

    def __repr__(self) -> str:
        return f"Lakehouse({self.config.redacted()})"

    # -- writing ---------------------------------------------------------------------------
    def append_events(
        self,
        rows: Any,
        *,
        snapshot_properties: dict[str, str] | None = None,
        batch_id: str | None = None,
        ts_unit: str = "auto",
        time_rule: TimeRule | None = None,
    ) -> AppendResult:
        """Validate and append events (dicts or a pyarrow.Table) in one commit: all or nothing.

        Give `batch_id` to make a retry safe: a batch id already in the retained snapshot history is
        not committed again (events.raw keeps 1 hour / 50 snapshots by default; a durable writer's
        exactly-once ledger has no such limit, docs/writer.md).
        Numeric `ts` values are epochs in `ts_unit` (`auto`: by magnitude; docs/writer.md);
        `time_rule` may add a plausibility window (`icebergdo.times.TimeRule`).
        CDC events in the batch are then routed to their collections (a routing failure is logged
        and recorded for `icebergdo cdc repair`; it never fails the committed batch).
        """
        rule = time_rule or (DEFAULT_RULE if ts_unit == "auto" else TimeRule(unit=ts_unit))  # type: ignore[arg-type]
        batch = to_events(rows, rule=rule)
        return self.append(layout.EVENTS_TABLE, batch, snapshot_properties=snapshot_properties, sort_by="ts", batch_id=batch_id)

    # -- deduplication ---------------------------------------------------------------------
    def set_dedupe(self, table: str, column: str | None, *, window: str | float = "24h") -> None:
        """Switch event-id deduplication on (`column`, e.g. "id", within `window`) or off (`None`) for a table.

        Sets the table properties `icebergdo.dedupe` / `icebergdo.dedupe.window` (icebergdo.dedupe):
        repeats within one commit are dropped before it, repeats across commits by maintenance.
        """
        tbl = self.table(table)
        if column is None:
            with tbl.transaction() as tx:
                tx.remove_properties("icebergdo.dedupe", "icebergdo.dedupe.window")
        else:
            if column not in tbl.schema().column_names:
                raise BadInputError(f"{table} has no column {column!r} to deduplicate by (columns: {', '.join(tbl.schema().column_names)})")
            setting = Dedupe(column, parse_duration(window, "window"))
            with tbl.transaction() as tx:
                tx.set_properties(setting.properties())
        self._dedupe_cache = None  # the next duckdb() shows (or drops) the table's _dedup view

    def dedupe_setting(self, table: str) -> Dedupe | None:
        """The table's deduplication setting (None: off)."""
        return Dedupe.of(self.table(table).properties)

    def writer(self, table: str = layout.EVENTS_TABLE, **options: Any) -> Writer:
        """A buffered, thread-safe writer (context manager): few commits from many appends.

        Options: max_rows, max_bytes, max_age, wal_dir / durable, unknown, block_timeout, upkeep, ...
        (see `icebergdo.writer.Writer` and docs/writer.md).
        """
        return Writer(self, table, **options)

    # -- CDC collections -------------------------------------------------------------------
    def collection(
        self,
        namespace: str,
        name: str,
        key: Sequence[str] | str | None = None,
        schema: pa.Schema | Schema | None = None,
        *,
        buckets: int | None = None,
    ) -> Collection:
        """A CDC collection: change log `{ns}.{name}__deltas` + current state `{ns}.{name}` (docs/cdc.md).

        `key` defaults to the stored key, else ["id"]; `buckets` sets bucket(N, key) for a new one.
        """
        return Collection.open(self, namespace, name, key=key, schema=schema, buckets=buckets)

    def route_pending(self) -> int:
        """Route the CDC events an earlier routing failure left behind; returns the snapshots completed."""
        return route_pending(self)

    # -- maintenance -----------------------------------------------------------------------
    def maintain(
        self,
        tables: Iterable[str] | None = None,
        steps: Iterable[str] | None = None,
        *,
        dry_run: bool = False,
        options: MaintenanceOptions | None = None,
        progress: Callable[[str], None] | None = None,
        engine: str = "python",
    ) -> list[StepReport]:
        """Retention, compaction, manifest rewrite, expiry, orphan removal (docs/maintenance.md).

        All tables and all steps by default; returns one `StepReport` per (table, step).
        """
        return maintain(self, tables, steps, dry_run=dry_run, options=options, progress=progress, engine=engine)

    def health(self, tables: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Per-table snapshots, files, small files, manifests, unreferenced bytes, last maintenance."""
        return health(self, tables)

    # -- reading ---------------------------------------------------------------------------
    def duckdb(self, database: str = ":memory:", *, live: bool = True) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection that sees every table: `events`, `namespace.table`, `<catalog name>.ns.table`.

        `live` (default): the catalog is `ATTACH`ed over the Iceberg REST protocol, so every query
        sees the latest commit and tables created later, and DuckDB may INSERT into them. A
        `type = "rest"` config attaches that catalog; a SQL catalog is served to DuckDB by an
        in-process REST catalog on 127.0.0.1 (one per process, started on first use; docs/catalogs.md).
        `live=False`: one `iceberg_scan` view per table with a snapshot, as of this call.
        A table that deduplicates (`set_dedupe`) also gets a view without its repeats in `main`:
        `events_dedup` for `events.raw`, `<namespace>_<table>_dedup` for others (docs/maintenance.md).
        """
        if not live:
            views, deduping = {}, []
            for name in self.tables():
                tbl = self.catalog.load_table(name)
                if tbl.metadata.current_snapshot_id is not None:
                    views[name] = tbl.metadata_location
                    deduping.append((name, tbl))
            scans = {name: f"iceberg_scan('{location}')" for name, location in views.items()}
            return duck.connect(self.config, views, database, self._dedupe_views(deduping, scans))
        alias = self.config.catalog_name
        deduping = self._deduplicating()
        attached = {name: ".".join(duck.quote_ident(p) for p in (alias, *name.split(".", 1))) for name, _t in deduping}
        return duck.connect_catalog(self.config, self.catalog_endpoint(), database, alias=alias, queries=self._dedupe_views(deduping, attached))

    def _deduplicating(self) -> list[tuple[str, Any]]:
        """(name, table) of the tables with a snapshot that deduplicate, re-read at most every DEDUPE_VIEWS_TTL_S."""
        now = time.monotonic()
        cached = self._dedupe_cache
        if cached is not None and cached[0] > now:
            return cached[1]
        found = []
        for name in self.tables():
            tbl = self.find_table(name)
            if tbl is not None and tbl.metadata.current_snapshot_id is not None and DEDUPE_PROPERTY in tbl.properties:
                found.append((name, tbl))
        self._dedupe_cache = (now + DEDUPE_VIEWS_TTL_S, found)
        return found

    def _dedupe_views(self, tables: list[tuple[str, Any]], sources: dict[str, str]) -> dict[str, str]:
        """{view name: SELECT} for the `tables` that deduplicate; `sources[name]` is what each view selects from."""
        out = {}
        for name, tbl in tables:
            try:
                select = maintenance_dedupe.view_sql(tbl, sources[name])
            except IcebergdoError as e:  # a bad dedupe property: no view, the plain one still works
                log.warning("no de-duplicated view of %s: %s", name, e)
                continue
            if select is not None:
                out[maintenance_dedupe.view_name(name)] = select
        return out

    def catalog_endpoint(self) -> duck.CatalogEndpoint:
        """The REST catalog other engines can attach for this lakehouse (an in-process one for a SQL catalog)."""
        if self.config.is_rest:
            return duck.CatalogEndpoint.from_config(self.config)
        from icebergdo.restcatalog.local import local_endpoint  # the in-process server (see pyproject's layer contract)

        uri, token = local_endpoint(self)
        return duck.CatalogEndpoint(uri=uri, warehouse=self.config.warehouse, token=token)

    def query(self, sql: str, params: Any = None) -> pa.Table:
        """Convenience: run SQL over the DuckDB views and return Arrow."""
        return self.duckdb().execute(sql, params).to_arrow_table()

    def spark(self) -> SparkSession:
        """A SparkSession whose catalog is this lakehouse's (needs `icebergdo[spark]` and Java; docs/spark.md)."""
        from icebergdo.engines import spark  # heavy (JVM): only when asked for

        return spark.session(self)
