"""The SQL catalog: pyiceberg's SqlCatalog plus what a shared, multi-process catalog needs.

- SQLite is switched to WAL with a busy timeout, so several processes can share one file.
- After every successful commit, `metadata/version-hint.text` names the current metadata file,
  so readers that open a table by its folder (DuckDB `iceberg_scan('<folder>')`) find it.
- A commit does not re-read metadata the committer already holds: pyiceberg's `commit_table`
  loads the current table (catalog row + metadata file) to apply the updates to; when the row
  still names the committer's own metadata file (metadata files are immutable), that table is
  used as it is. This is one read and parse of metadata.json less per commit, inside the table's
  commit lock, where every millisecond is paid by every waiting writer. The updates are applied
  without pyiceberg's defensive deep copy of the whole metadata (`metadata.apply_updates`), whose
  cost grew with every snapshot kept.
"""

from __future__ import annotations

import logging
import posixpath
import threading
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.table import CommitTableResponse, StagedTable, Table
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.update import TableRequirement, TableUpdate
from pyiceberg.typedef import Identifier
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.orm import Session

from icebergdo.config import Config
from icebergdo.errors import StorageError
from icebergdo.iceberg.metadata import apply_updates
from icebergdo.redact import redact_uri, scrub

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
_committing = threading.local()  # the table a commit_table call in this thread was handed
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


class IcebergdoCatalog(SqlCatalog):
    """A SqlCatalog that keeps version hints current and tunes SQLite for several processes."""

    def _init_catalog(self) -> None:
        # Runs right after SqlCatalog creates its engine and before its first connection.
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        super()._init_catalog()

    def create_table(self, *args: Any, **kwargs: Any) -> Table:
        table = super().create_table(*args, **kwargs)
        self._write_version_hint(table.io, table.metadata_location)
        return table

    def commit_table(
        self, table: Table, requirements: tuple[TableRequirement, ...], updates: tuple[TableUpdate, ...]
    ) -> CommitTableResponse:
        _committing.table = table
        try:
            response = super().commit_table(table, requirements, updates)
        finally:
            _committing.table = None
        self._write_version_hint(table.io, response.metadata_location)
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

    def load_table(self, identifier: str | tuple[str, ...]) -> Table:
        held = getattr(_committing, "table", None)
        if (
            held is not None
            and tuple(held.name()) == Catalog.identifier_to_tuple(identifier)
            and self.metadata_location_of(".".join(held.name())) == held.metadata_location
        ):
            return held  # still current: the metadata we hold is the file the catalog names
        return super().load_table(identifier)

    def metadata_location_of(self, identifier: str) -> str | None:
        """The table's current metadata location from the catalog row: one query, no file read.

        Lets a committer that holds the table's commit lock skip reloading metadata it already has.
        """
        namespace = Catalog.namespace_to_string(Catalog.namespace_from(identifier))
        name = Catalog.table_name_from(identifier)
        with Session(self.engine) as session:
            return session.scalar(
                select(IcebergTables.metadata_location).where(
                    IcebergTables.catalog_name == self.name,
                    IcebergTables.table_namespace == namespace,
                    IcebergTables.table_name == name,
                )
            )

    @staticmethod
    def _write_version_hint(io: Any, metadata_location: str) -> None:
        """Best effort: the commit has happened; a missing hint only slows folder-based readers."""
        path, text = version_hint_location(metadata_location)
        try:
            with io.new_output(path).create(overwrite=True) as out:
                out.write(text.encode())
        except Exception as e:  # noqa: BLE001 - never fail a committed transaction over a hint
            log.warning("could not write %s: %s", path, e)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def open_catalog(config: Config) -> IcebergdoCatalog:
    """Open (and on first use, create) the catalog a Config describes."""
    if config.is_sqlite and config.home is not None:
        config.home.mkdir(parents=True, exist_ok=True)
    try:
        catalog = IcebergdoCatalog(config.catalog_name, **config.catalog_properties())
    except SAOperationalError as e:
        raise StorageError(f"cannot open catalog {redact_uri(config.catalog_uri)}: {scrub(str(e.orig), config.secrets())}") from None
    return catalog
