"""The catalog: pyiceberg's SqlCatalog (or RestCatalog) plus what a shared, multi-process catalog needs.

- SQLite is switched to WAL with a busy timeout, so several processes can share one file.
- After every successful commit, `metadata/version-hint.text` names the current metadata file,
  so readers that open a table by its folder (DuckDB `iceberg_scan('<folder>')`) find it.
- Tables come back as `AdrTable`: the ADR layout's LocationProvider is named by the table object,
  not by a table property, so a pyiceberg without icebergdo installed can still write our tables
  (it writes under the standard `write.data.path` / `write.metadata.path`; see docs/catalogs.md).
  A table still carrying the old `write.py-location-provider.impl` property has it removed on
  first load (one metadata-only commit).
- `commit_changes` commits several tables in one database transaction (all or none): the REST
  catalog's `POST /v1/transactions/commit`.
- A commit does not re-read metadata the committer already holds: pyiceberg's `commit_table`
  loads the current table (catalog row + metadata file) to apply the updates to; when the row
  still names the committer's own metadata file (metadata files are immutable), that table is
  used as it is. This is one read and parse of metadata.json less per commit, inside the table's
  commit lock, where every millisecond is paid by every waiting writer. The updates are applied
  without pyiceberg's defensive deep copy of the whole metadata (`metadata.apply_updates`), whose
  cost grew with every snapshot kept.
- Requirements of our own (the exactly-once ledger's guard, conditional property updates) are
  checked here, client-side, against the metadata the commit is applied to: only this catalog
  accepts them (`accepts_own_requirements`); a REST server would reject an unknown requirement.
"""

from __future__ import annotations

import logging
import posixpath
import threading
from collections.abc import Sequence
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.table import CommitTableResponse, StagedTable, Table
from pyiceberg.table.locations import LocationProvider, load_location_provider
from pyiceberg.table.update import AssertTableUUID, RemovePropertiesUpdate, TableRequirement, TableUpdate
from pyiceberg.typedef import Identifier
from sqlalchemy import event, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.orm import Session

from icebergdo import layout
from icebergdo.config import Config
from icebergdo.errors import ConfigError, StorageError
from icebergdo.iceberg.metadata import apply_updates
from icebergdo.redact import redact_uri, safe_message, scrub

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
VERSION_HINT = "version-hint.text"
METADATA_SUFFIX = ".metadata.json"


def version_hint_location(metadata_location: str) -> tuple[str, str]:
    """(hint file path, hint text) for a metadata file: the text is the file's stem.

    DuckDB resolves a hint `H` to `H.metadata.json` or `vH.metadata.json`, so the stem of a
    unique, version-prefixed file name (`00003-<uuid>`) round-trips.
    """
    folder, name = posixpath.split(metadata_location)
    stem = name[: -len(METADATA_SUFFIX)] if name.endswith(METADATA_SUFFIX) else name
    return f"{folder}/{VERSION_HINT}", stem


class AdrTable(Table):
    """A pyiceberg Table whose manifests and data files follow the ADR layout (when the table does)."""

    def location_provider(self) -> LocationProvider:
        props = self.metadata.properties
        if layout.is_adr_table(props):
            return layout.AdrLocationProvider(self.metadata.location, props)
        return super().location_provider()


def as_adr_table(table: Table) -> AdrTable:
    """The same table as an `AdrTable` (no I/O)."""
    if isinstance(table, AdrTable):
        return table
    return AdrTable(table.name(), table.metadata, table.metadata_location, table.io, table.catalog, table.config)


def drop_legacy_provider(catalog: Catalog, table: Table) -> Table:
    """Remove `write.py-location-provider.impl = icebergdo…` from a table made before it moved off the table.

    A foreign pyiceberg refuses to write a table naming a class it cannot import. One metadata-only
    commit; if it fails (a read-only catalog user, a race), the table is used as it is.
    """
    if table.metadata.properties.get(layout.LEGACY_PROVIDER_KEY) != layout.PROVIDER_IMPL:
        return table
    try:
        response = catalog.commit_table(
            table, (AssertTableUUID(uuid=table.metadata.table_uuid),), (RemovePropertiesUpdate(removals=[layout.LEGACY_PROVIDER_KEY]),)
        )
    except Exception as e:  # noqa: BLE001 - an optional clean-up: the table works for icebergdo either way
        log.info("%s: could not remove the legacy %s property: %s", ".".join(table.name()), layout.LEGACY_PROVIDER_KEY, safe_message(e))
        return table
    log.info("%s: removed the legacy %s property (plain pyiceberg writers can now write it)", ".".join(table.name()), layout.LEGACY_PROVIDER_KEY)
    table.metadata, table.metadata_location = response.metadata, response.metadata_location
    return table


_committing = threading.local()  # inside SqlCatalog.commit_table on this thread (`depth`), and the table it was handed (`table`)


class _Named:
    """What `SqlCatalog.commit_table` needs of its `table` argument: the identifier."""

    def __init__(self, identifier: Identifier) -> None:
        self._identifier = identifier

    def name(self) -> Identifier:
        return self._identifier


class IcebergdoCatalog(SqlCatalog):
    """A SqlCatalog that keeps version hints current, tunes SQLite for several processes and returns `AdrTable`s."""

    def _init_catalog(self) -> None:
        # Runs right after SqlCatalog creates its engine and before its first connection.
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        super()._init_catalog()
        self._hint_io = self._load_file_io()

    def _convert_orm_to_iceberg(self, orm_table: IcebergTables) -> Table:
        return as_adr_table(super()._convert_orm_to_iceberg(orm_table))

    def load_table(self, identifier: str | Identifier) -> Table:
        if getattr(_committing, "depth", 0):
            # SqlCatalog.commit_table loading the current state: no clean-up commit inside a commit, and
            # no metadata read when the catalog still names the file the committer holds.
            held = getattr(_committing, "table", None)
            if held is not None and tuple(held.name()) == Catalog.identifier_to_tuple(identifier):
                try:
                    if self.metadata_location_of(held.name()) == held.metadata_location:
                        return as_adr_table(held)
                except NoSuchTableError:
                    pass
            return super().load_table(identifier)
        return drop_legacy_provider(self, super().load_table(identifier))

    def create_table(self, *args: Any, **kwargs: Any) -> Table:
        table = super().create_table(*args, **kwargs)
        self._write_version_hint(table.metadata_location)
        return table

    def commit_table(
        self, table: Table, requirements: tuple[TableRequirement, ...], updates: tuple[TableUpdate, ...]
    ) -> CommitTableResponse:
        _committing.depth = getattr(_committing, "depth", 0) + 1
        outer, _committing.table = getattr(_committing, "table", None), table if isinstance(table, Table) else None
        try:
            response = super().commit_table(table, requirements, updates)
        finally:
            _committing.depth -= 1
            _committing.table = outer
        self._write_version_hint(response.metadata_location)
        return response

    def _update_and_stage_table(
        self,
        current_table: Table | None,
        table_identifier: Identifier,
        requirements: tuple[TableRequirement, ...],
        updates: tuple[TableUpdate, ...],
    ) -> StagedTable:
        """pyiceberg's, minus the deep copy of the whole metadata (creating a table is left to pyiceberg)."""
        if current_table is None:
            return super()._update_and_stage_table(current_table, table_identifier, requirements, updates)
        for requirement in requirements:
            requirement.validate(current_table.metadata)
        updated = apply_updates(current_table.metadata, updates, metadata_location=current_table.metadata_location)
        version = self._parse_metadata_version(current_table.metadata_location) + 1
        location = load_location_provider(updated.location, updated.properties).new_table_metadata_file_location(version)
        return StagedTable(
            identifier=table_identifier,
            metadata=updated,
            metadata_location=location,
            io=self._load_file_io(properties=updated.properties, location=location),
            catalog=self,
        )

    def commit_identifier(
        self, identifier: Identifier, requirements: tuple[TableRequirement, ...], updates: tuple[TableUpdate, ...]
    ) -> CommitTableResponse:
        """`commit_table` for a table known by name only (a REST commit; also a staged create)."""
        return self.commit_table(_Named(identifier), requirements, updates)  # type: ignore[arg-type]

    def commit_changes(
        self, changes: Sequence[tuple[Identifier, tuple[TableRequirement, ...], tuple[TableUpdate, ...]]]
    ) -> list[CommitTableResponse]:
        """Commit to several tables atomically: every table moves to its new metadata, or none does.

        Each change is validated and its new metadata file written first; then one database
        transaction swaps every row, each under the same compare-and-swap on the current metadata
        location that a single commit uses. A row that moved meanwhile rolls everything back
        (`CommitFailedException`); a table that does not exist yet is created (staged create).
        """
        staged = []
        for identifier, requirements, updates in changes:
            try:
                current: Table | None = super().load_table(identifier)
            except NoSuchTableError:
                current = None
            new = self._update_and_stage_table(current, identifier, requirements, updates)
            unchanged = current is not None and new.metadata == current.metadata
            if not unchanged:
                self._write_metadata(metadata=new.metadata, io=new.io, metadata_path=new.metadata_location)
            staged.append((identifier, current, new, unchanged))
        with Session(self.engine) as session:
            for identifier, current, new, unchanged in staged:
                namespace = Catalog.namespace_to_string(Catalog.namespace_from(identifier))
                name = Catalog.table_name_from(identifier)
                if unchanged:
                    continue
                if current is None:
                    try:
                        session.execute(insert(IcebergTables).values(**self._create_table_row(namespace, name, new.metadata_location)))
                    except IntegrityError:
                        session.rollback()
                        raise TableAlreadyExistsError(f"Table {namespace}.{name} already exists") from None
                    continue
                result = session.execute(
                    update(IcebergTables)
                    .where(
                        IcebergTables.catalog_name == self.name,
                        IcebergTables.table_namespace == namespace,
                        IcebergTables.table_name == name,
                        IcebergTables.metadata_location == current.metadata_location,
                    )
                    .values(metadata_location=new.metadata_location, previous_metadata_location=current.metadata_location)
                )
                if result.rowcount < 1:  # type: ignore[attr-defined]
                    session.rollback()
                    raise CommitFailedException(f"Table has been updated by another process: {namespace}.{name}")
            session.commit()
        out = []
        for _identifier, current, new, unchanged in staged:
            if unchanged and current is not None:
                out.append(_response(current.metadata, current.metadata_location))
            else:
                self._write_version_hint(new.metadata_location)
                out.append(_response(new.metadata, new.metadata_location))
        return out

    def metadata_location_of(self, identifier: Identifier) -> str:
        """The current metadata location from the catalog row alone (no metadata file is read)."""
        namespace = Catalog.namespace_to_string(Catalog.namespace_from(identifier))
        name = Catalog.table_name_from(identifier)
        stmt = select(IcebergTables.metadata_location).where(
            IcebergTables.catalog_name == self.name, IcebergTables.table_namespace == namespace, IcebergTables.table_name == name
        )
        if (type_filter := self._iceberg_type_filter()) is not None:
            stmt = stmt.where(type_filter)
        with Session(self.engine) as session:
            location = session.scalar(stmt)
        if not location:
            raise NoSuchTableError(f"Table does not exist: {namespace}.{name}")
        return str(location)

    def metadata_bytes(self, metadata_location: str) -> bytes | None:
        """The metadata file as stored (JSON), or None when it is compressed."""
        if metadata_location.endswith(".gz.metadata.json"):
            return None
        with self._hint_io.new_input(metadata_location).open() as f:
            return bytes(f.read())

    def _write_version_hint(self, metadata_location: str) -> None:
        """Best effort: the commit has happened; a missing hint only slows folder-based readers."""
        path, text = version_hint_location(metadata_location)
        try:
            with self._hint_io.new_output(path).create(overwrite=True) as out:
                out.write(text.encode())
        except Exception as e:  # noqa: BLE001 - never fail a committed transaction over a hint
            log.warning("could not write %s: %s", path, e)


def _response(metadata: Any, metadata_location: str) -> CommitTableResponse:
    return CommitTableResponse.model_validate({"metadata": metadata, "metadata-location": metadata_location})


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def open_catalog(config: Config) -> Catalog:
    """Open (and on first use, create) the catalog a Config describes: SQL, or REST (`[catalog] type = "rest"`)."""
    if config.is_rest:
        from icebergdo.iceberg.rest import open_rest_catalog

        return open_rest_catalog(config)
    if config.is_sqlite and config.home is not None:
        config.home.mkdir(parents=True, exist_ok=True)
    try:
        catalog = IcebergdoCatalog(config.catalog_name, **config.catalog_properties())
    except SAOperationalError as e:
        raise StorageError(f"cannot open catalog {redact_uri(config.catalog_uri)}: {scrub(str(e.orig), config.secrets())}") from None
    return catalog


def accepts_own_requirements(catalog: Any) -> bool:
    """Does this catalog check commit requirements of our own (client-side, before its compare-and-swap)?"""
    return isinstance(catalog, IcebergdoCatalog)


def sql_catalog(catalog: Catalog, what: str = "this") -> IcebergdoCatalog:
    """The catalog as our SQL catalog, or a ConfigError saying `what` needs one."""
    if not isinstance(catalog, IcebergdoCatalog):
        raise ConfigError(f"{what} needs icebergdo's SQL catalog (sqlite or postgresql), not {type(catalog).__name__}")
    return catalog
