"""`Tables`: a catalog plus a warehouse, and every table in it created and appended in the ADR layout.

Everything that reads or writes tables (the writer, CDC collections, maintenance, the engines)
takes a `Tables`; the `Lakehouse` facade is one, with the writer, collections and maintenance hung
off it. This module owns three things:

- creating and loading tables with our defaults (the ADR LocationProvider, commit retries, zstd);
- `append`: one idempotent commit of an Arrow batch (see `icebergdo.commit`);
- post-commit hooks: after a commit, each registered hook sees (table, batch, result). The facade
  registers CDC routing as one. A hook that fails is logged and never makes the committed batch
  look failed: the commit has happened, and a caller that retried would commit the batch twice.
"""

from __future__ import annotations

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

from icebergdo import commit, layout
from icebergdo.config import Config
from icebergdo.errors import BadInputError, ConfigError, NoSuchTableError
from icebergdo.iceberg import datafiles
from icebergdo.iceberg.catalog import open_catalog
from icebergdo.schema import EVENT_PARTITION_SPEC, EVENT_SCHEMA, EVENT_SORT_ORDER

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
EVENTS_TABLE_PROPERTIES = {"write.target-file-size-bytes": str(32 * 1024 * 1024)}


@dataclass(frozen=True)
class AppendResult:
    """What one commit added."""

    table: str
    snapshot_id: int | None
    rows: int
    files: int
    already_committed: bool = False  # the batch id was already in the history: nothing new was written
    batch_id: str | None = None


CommitHook = Callable[[Table, pa.Table, AppendResult], None]


class Tables:
    """A catalog plus a warehouse: list, load, create and append to tables."""

    def __init__(self, config: Config, catalog: Catalog | None = None) -> None:
        self.config = config
        self.catalog = catalog or open_catalog(config)
        self._hooks: list[CommitHook] = []

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
            properties=EVENTS_TABLE_PROPERTIES,
        )

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
    ) -> AppendResult:
        """One commit of an Arrow batch to any table (sorted by `sort_by` first), then the post-commit hooks.

        Idempotent per `icebergdo.batch-id` (`batch_id`, or a snapshot property; generated when
        absent): transient failures are retried with jitter and a batch id already in the history
        is not committed again (see `icebergdo.commit`). Storage/catalog failures raise `StorageError`;
        a batch that does not fit the table's schema raises `BadInputError`.
        """
        table = commit.call_with_retry(lambda: self.table(name), what=f"{name}: loading the table", config=self.config)
        if batch.num_rows == 0:
            return AppendResult(name, None, 0, 0)
        if sort_by:
            batch = datafiles.sort_by(batch, sort_by)
        try:
            outcome = commit.append_idempotent(
                lambda: self.table(name),
                batch,
                table=table,
                snapshot_properties=snapshot_properties,
                batch_id=batch_id,
                writer_id=writer_id,
                config=self.config,
                what=name,
                lock=commit.commit_lock(self.catalog, name) if commit.lock_enabled(table) else None,
            )
        except (ValueError, TypeError) as e:
            raise BadInputError(f"{name}: batch does not fit the table schema: {e}") from None
        snap = outcome.snapshot
        added = snap.summary.get("added-data-files") if snap and snap.summary else None
        files = int(added) if added is not None and not outcome.already_committed else 0
        result = AppendResult(name, snap.snapshot_id if snap else None, batch.num_rows, files, outcome.already_committed, outcome.batch_id)
        self._after_commit(outcome.table, batch, result)
        return result

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
