"""`Tables`: a catalog plus a warehouse, and every table in it created and appended in the ADR layout.

Everything that reads or writes tables (the writer, CDC collections, maintenance, the engines)
takes a `Tables`; the `Lakehouse` facade is one, with the writer, collections and maintenance hung
off it. This module owns three things:

- creating and loading tables with our defaults (the ADR LocationProvider, commit retries, zstd),
  and for streaming tables (`events.raw`, CDC change logs, any table a buffered writer feeds)
  the defaults that keep a table with minute-level commits bounded (`STREAMING_TABLE_PROPERTIES`);
  an existing streaming table gets the ones it lacks on its first write, never overriding a value
  that is set;
- `append`: one idempotent commit of an Arrow batch (see `icebergdo.commit`), with the writer's
  exactly-once ledger entry when a durable writer commits (see `icebergdo.ledger`);
- post-commit hooks: after a commit, each registered hook sees (table, batch, result). The facade
  registers CDC routing as one. A hook that fails is logged and never makes the committed batch
  look failed: the commit has happened, and a caller that retried would commit the batch twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
from pyiceberg import exceptions as iceberg_errors
from pyiceberg.catalog import Catalog
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER, SortOrder

from icebergdo import commit, layout, ledger
from icebergdo.config import Config
from icebergdo.dedupe import Dedupe, drop_duplicates
from icebergdo.errors import BadInputError, ConfigError, NoSuchTableError
from icebergdo.iceberg import datafiles, properties
from icebergdo.iceberg.catalog import open_catalog
from icebergdo.schema import EVENT_PARTITION_SPEC, EVENT_SCHEMA, EVENT_SORT_ORDER, check_new_columns

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

# Commit retries sized for several writers on one table (pyiceberg's default of 4 loses commits at 8 writers).
DEFAULT_TABLE_PROPERTIES = {
    "commit.retry.num-retries": "20",
    "commit.retry.min-wait-ms": "50",
    "commit.retry.max-wait-ms": "2000",
    "commit.retry.total-timeout-ms": "120000",
    "write.parquet.compression-codec": "zstd",
}

# 32 MiB: a full writer flush (max_bytes 128 MiB of Arrow) of typical events is ~24 MiB of zstd
# Parquet (~65 B/event), >= 75 % of 32 MiB, so only files cut short by max_age or late events count
# as small, and compaction merges those into files readers scan well (docs/maintenance.md).
# `id`, `payload` and `ts` are (nearly) all distinct: no dictionary encoding for them (datafiles.parquet_options).
EVENTS_TABLE_PROPERTIES = {
    "write.target-file-size-bytes": str(32 * 1024 * 1024),
    datafiles.DICTIONARY_EXCLUDE_PROPERTY: "id,payload,ts",
}


# Streaming tables take many small commits a minute (a buffered writer at its defaults flushes every
# 5 s: up to 17,000 commits a day). Every snapshot stays in metadata.json, which each commit reads
# and rewrites, so commit cost grows with the snapshots kept; these keep it flat (docs/writer.md,
# "Table upkeep"). Time travel on events.raw is by event time (`ts`), which no snapshot expiry
# affects; snapshot retention bounds only commit-time travel and incremental reads.
MAX_SNAPSHOTS_PROPERTY = "icebergdo.history.max-snapshots"
UPKEEP_ENABLED_PROPERTY = "icebergdo.upkeep.enabled"
UPKEEP_EVERY_COMMITS_PROPERTY = "icebergdo.upkeep.every-commits"
UPKEEP_EVERY_MS_PROPERTY = "icebergdo.upkeep.every-ms"
UPKEEP_CLOSED_AFTER_MS_PROPERTY = "icebergdo.upkeep.compact-closed-after-ms"
LEDGER_MAX_AGE_MS_PROPERTY = "icebergdo.upkeep.ledger-max-age-ms"
STREAMING_TABLE_PROPERTIES = {
    # Snapshot retention (Iceberg's own key, honoured by `icebergdo maintain` and Spark too; the
    # minimum kept stays Iceberg's, 1) ...
    "history.expire.max-snapshot-age-ms": str(3_600_000),  # 1 hour
    # ... and a cap on the count, which the writer's upkeep applies: at 12 commits a minute one hour is 720
    MAX_SNAPSHOTS_PROPERTY: "50",
    # Old metadata files listed in metadata.json (Iceberg's default is 100)
    "write.metadata.previous-versions-max": "20",
    # Manifest merging on commit: a safety net when upkeep is off (upkeep merges them long before 100)
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "100",
    "commit.manifest.target-size-bytes": str(8 * 1024 * 1024),
    # The writer's own upkeep (icebergdo.upkeep): when, and what it may do
    UPKEEP_ENABLED_PROPERTY: "true",
    UPKEEP_EVERY_COMMITS_PROPERTY: "20",
    UPKEEP_EVERY_MS_PROPERTY: str(300_000),
    UPKEEP_CLOSED_AFTER_MS_PROPERTY: str(3_600_000),  # an hour partition is closed 1 h after it ends
    LEDGER_MAX_AGE_MS_PROPERTY: str(30 * 86_400_000),  # ledger entries of writers silent for 30 days go
}
CDC_ROLE_PROPERTY = "icebergdo.cdc.role"  # "log" marks a CDC change log (icebergdo.cdc.design)


def is_streaming(name: str, table: Table) -> bool:
    """events.raw and CDC change logs: the tables that take a commit every few seconds."""
    return name == layout.EVENTS_TABLE or table.metadata.properties.get(CDC_ROLE_PROPERTY) == "log"


@dataclass(frozen=True)
class AppendResult:
    """What one commit added."""

    table: str
    snapshot_id: int | None
    rows: int
    files: int
    already_committed: bool = False  # the batch was already committed (ledger or history): nothing new was written
    batch_id: str | None = None
    upkeep: bool = True  # may the post-commit table upkeep run for this commit (the writer's `upkeep` option)


CommitHook = Callable[[Table, pa.Table, AppendResult], None]


class Tables:
    """A catalog plus a warehouse: list, load, create and append to tables."""

    def __init__(self, config: Config, catalog: Catalog | None = None) -> None:
        self.config = config
        self.catalog = catalog or open_catalog(config)
        self._hooks: list[CommitHook] = []
        self._defaults_checked: set[str] = set()
        self._committed: dict[str, Table] = {}  # per table, as our last append left it (appends reuse it if still current)

    @property
    def catalog_engine(self) -> Engine:
        """The SQLAlchemy engine of the SQL catalog (the database that also holds our locks)."""
        engine = getattr(self.catalog, "engine", None)
        if engine is None:
            raise ConfigError(f"{self.config.source}: this needs a SQL catalog (sqlite or postgresql)")
        return cast("Engine", engine)

    # -- post-commit hooks -----------------------------------------------------------------
    def on_commit(self, hook: CommitHook) -> None:
        """Call `hook(table, batch, result)` after every successful `append` (also for a replayed batch)."""
        self._hooks.append(hook)

    def _after_commit(self, table: Table, batch: pa.Table, result: AppendResult) -> None:
        for hook in self._hooks:
            try:
                hook(table, batch, result)
            except Exception as e:  # noqa: BLE001 - the commit stands; the hook reports and records its own failure
                log.error("%s: post-commit step %s failed after batch %s committed: %s",
                          result.table, getattr(hook, "__name__", hook), result.batch_id, e)

    # -- tables ----------------------------------------------------------------------------
    def tables(self) -> list[str]:
        """Every table in the catalog, as 'namespace.table'."""
        out = []
        for ns in self.catalog.list_namespaces():
            if ns == (layout.SYSTEM_NAMESPACE,):  # our bookkeeping (maintenance leases on a REST catalog)
                continue
            for ident in self.catalog.list_tables(ns):
                out.append(".".join(ident))
        return sorted(out)

    def table(self, name: str) -> Table:
        """Load a table (`events.raw` is created on first use); `NoSuchTableError` names the tables there are."""
        layout.split_identifier(name)
        if name == layout.EVENTS_TABLE:
            return self.events_table()
        try:
            return self.catalog.load_table(name)
        except iceberg_errors.NoSuchTableError:
            raise NoSuchTableError(f"no table {name!r} (tables: {', '.join(self.tables()) or 'none'})") from None

    def add_columns(self, name: str, schema: pa.Schema) -> list[str]:
        """Add the top-level columns of `schema` that table `name` lacks (`--unknown keep`); the names added.

        A new name that differs from a column (or another new name) only by case is refused with
        `BadInputError` before anything changes: DuckDB and Spark fold case, so `ID` beside `id`
        would read as `ID_1` or be ambiguous.
        """
        table = self.table(name)
        known = table.schema().column_names
        new = [n for n in schema.names if n not in set(known)]
        if not new:
            return []
        check_new_columns(known, new, where=f"{name}: new field")
        with table.update_schema() as update:
            update.union_by_name(schema)
        return new

    def find_table(self, name: str) -> Table | None:
        """The table, or None when the catalog has no such table."""
        try:
            return self.catalog.load_table(name)
        except iceberg_errors.NoSuchTableError:
            return None

    def create_table(
        self,
        name: str,
        schema: Schema | pa.Schema,
        *,
        data_path: str,
        partition_spec: PartitionSpec = UNPARTITIONED_PARTITION_SPEC,
        sort_order: SortOrder = UNSORTED_SORT_ORDER,
        properties: dict[str, str] | None = None,
    ) -> Table:
        """Create (or load, if it exists) a table whose files follow the ADR layout under `data_path`."""
        ns, _ = layout.split_identifier(name)
        self.ensure_namespace(ns)
        props = {**DEFAULT_TABLE_PROPERTIES, **layout.table_properties(self.config.warehouse, name, data_path), **(properties or {})}
        try:
            return self.catalog.create_table(
                name,
                schema=schema,
                location=layout.table_location(self.config.warehouse, name),
                partition_spec=partition_spec,
                sort_order=sort_order,
                properties=props,
            )
        except iceberg_errors.TableAlreadyExistsError:
            return self.catalog.load_table(name)

    def ensure_namespace(self, namespace: str) -> None:
        layout.validate_name(namespace, "namespace")
        try:
            self.catalog.create_namespace_if_not_exists(namespace)
        except iceberg_errors.NamespaceAlreadyExistsError:
            pass

    def events_table(self) -> Table:
        """`events.raw`, created on first use."""
        found = self.find_table(layout.EVENTS_TABLE)
        if found is not None:
            return found
        return self.create_table(
            layout.EVENTS_TABLE,
            EVENT_SCHEMA,
            data_path=layout.EVENTS_NAMESPACE,
            partition_spec=EVENT_PARTITION_SPEC,
            sort_order=EVENT_SORT_ORDER,
            properties={**STREAMING_TABLE_PROPERTIES, **EVENTS_TABLE_PROPERTIES},
        )

    def ensure_streaming_defaults(self, name: str, table: Table | None = None) -> Table:
        """Give a streaming table the `STREAMING_TABLE_PROPERTIES` it lacks (once per process and table).

        Only missing keys are added, in a commit that is refused if any of them was set meanwhile:
        a value a user set is never overridden. A failure is logged, never raised (the defaults
        are an optimisation; the next process tries again).
        """
        table = table if table is not None else self.table(name)
        if name in self._defaults_checked:
            return table
        if any(k not in table.metadata.properties for k in STREAMING_TABLE_PROPERTIES):
            try:
                table, added = properties.set_missing(table, STREAMING_TABLE_PROPERTIES)
            except Exception as e:  # noqa: BLE001 - see docstring
                log.warning("%s: could not add the streaming table defaults (%s); will try again next run", name, commit.describe(e))
                return table
            if added:
                log.info("%s: added streaming table defaults %s", name, ", ".join(added))
        self._defaults_checked.add(name)
        return table

    # -- writing ---------------------------------------------------------------------------
    def append(
        self,
        name: str,
        batch: pa.Table,
        *,
        snapshot_properties: dict[str, str] | None = None,
        sort_by: str | None = None,
        batch_id: str | None = None,
        writer_id: str | None = None,
        writer_seq: int | None = None,
        upkeep: bool = True,
    ) -> AppendResult:
        """One commit of an Arrow batch to any table (each data file sorted by `sort_by`), then the post-commit hooks.

        Idempotent: transient failures are retried with jitter and a batch is never committed twice
        (see `icebergdo.commit`). A durable writer passes its `writer_id` (ULID) and the batch's
        `writer_seq`: the commit then advances the writer's ledger entry atomically and is skipped
        if the ledger already covers it, however much history was expired. Without them, a
        `batch_id` (or `icebergdo.batch-id` snapshot property) already in the retained snapshot
        history is not committed again. Storage/catalog failures raise `StorageError`; a batch that
        does not fit the table's schema raises `BadInputError`. `upkeep=False` keeps the post-commit
        upkeep (`icebergdo.upkeep`) from running for this commit. The batch is sorted as it is
        written, file by file, not as a whole: the hooks see it in the caller's order.
        """
        table, reused = commit.call_with_retry(lambda: self._table_for_append(name), what=f"{name}: loading the table", config=self.config)
        if writer_seq is not None and not (writer_id and ledger.is_writer_id(writer_id)):
            raise BadInputError(f"{name}: a writer_seq needs a writer_id that is a ULID (the ledger key), got {writer_id!r}")
        if batch.num_rows == 0:
            return AppendResult(name, None, 0, 0, upkeep=upkeep)
        if upkeep and is_streaming(name, table):
            table = self.ensure_streaming_defaults(name, table)
        setting = Dedupe.of(table.properties)  # `icebergdo.dedupe`: repeats within the batch go first
        if setting is not None:
            batch = drop_duplicates(batch, setting)
        # Shared by every append from its first data file to its commit: orphan removal below its
        # safety window waits for a moment with no upload in flight (commit.uploads_lock).
        in_flight = commit.uploads_lock(self.catalog, name) if commit.lock_enabled(table) else contextlib.nullcontext
        with in_flight(), self._forget_on_failure(name):
            outcome = commit.append_idempotent(
                lambda: self.table(name),
                batch,
                table=table,
                snapshot_properties=snapshot_properties,
                batch_id=batch_id,
                writer_id=writer_id,
                writer_seq=writer_seq,
                config=self.config,
                what=name,
                lock=commit.commit_lock(self.catalog, name) if commit.lock_enabled(table) else None,
                current_location=(lambda: self._current_location(name)) if hasattr(self.catalog, "metadata_location_of") else None,
                sort_by=sort_by,
                reused=reused,
            )
        self._committed[name] = outcome.table
        snap = outcome.snapshot
        added = snap.summary.get("added-data-files") if snap and snap.summary else None
        files = int(added) if added is not None and not outcome.already_committed else 0
        result = AppendResult(
            name, snap.snapshot_id if snap else None, batch.num_rows, files, outcome.already_committed, outcome.batch_id, upkeep
        )
        self._after_commit(outcome.table, batch, result)
        return result

    def _table_for_append(self, name: str) -> tuple[Table, bool]:
        """(table, reused): the table as our last append left it when the catalog still names that
        metadata (one query, no metadata read: a writer's commits do not re-read their own), else
        freshly loaded. A new `Table` each time: the metadata is immutable, the object is not shared
        between threads.

        A catalog without that cheap query (REST) gets the last append's table as it is (`reused`):
        `commit.append_idempotent` reloads it under the commit lock before committing anyway, and
        retries a write that does not fit it on the reloaded table, so loading it here too would only
        add a round trip per commit. Settings read from it before the commit (`icebergdo.dedupe`, the
        streaming defaults) are then as of our last commit.
        """
        last = self._committed.get(name)
        if last is not None:
            cheap = hasattr(self.catalog, "metadata_location_of")
            if not cheap or self._current_location(name) == last.metadata_location:
                return type(last)(last.name(), last.metadata, last.metadata_location, last.io, self.catalog, last.config), not cheap
        return self.table(name), False

    @contextlib.contextmanager
    def _forget_on_failure(self, name: str) -> Any:
        """A failed append (its outcome possibly unknown) forgets the table it kept: a retry by the
        caller starts from a fresh load, whose history or ledger shows the batch if it landed."""
        try:
            yield
        except BaseException:
            self._committed.pop(name, None)
            raise

    def _current_location(self, name: str) -> str | None:
        """The table's current metadata location from the catalog row (one query), None if it is gone."""
        try:
            return str(self.catalog.metadata_location_of(layout.split_identifier(name)))  # type: ignore[attr-defined]
        except iceberg_errors.NoSuchTableError:
            return None

    def describe_tables(self) -> list[dict[str, Any]]:
        """One entry per table: where its metadata is, its snapshot, its row count (for `tables --json`)."""
        out = []
        for name in self.tables():
            tbl = self.catalog.load_table(name)
            snap = tbl.current_snapshot()
            total = snap.summary.get("total-records") if snap and snap.summary else None
            rows = int(total) if total is not None else 0
            out.append(
                {
                    "table": name,
                    "metadata_location": tbl.metadata_location,
                    "snapshot_id": snap.snapshot_id if snap else None,
                    "rows": rows,
                }
            )
        return out
