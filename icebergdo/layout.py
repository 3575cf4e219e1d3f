"""The ADR-0002 path layout, applied by pyiceberg itself through a LocationProvider.

    {warehouse}/events/{YYYY}/{MM}/{DD}/{HH}/{ulid}.parquet       raw events (hour partitions)
    {warehouse}/{namespace}/{collection}/deltas/{YYYY}/{MM}/{DD}/  CDC change log (day partitions)
    {warehouse}/{namespace}/{collection}/data/                     CDC current state
    {warehouse}/catalog/{namespace}.{table}/metadata/              table metadata (*.metadata.json)
    {warehouse}/catalog/{namespace}.{table}/manifests/             manifests and manifest lists (*.avro)

Every file name carries a ULID or UUID, so two writers can never overwrite each other's file.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote_plus

from pyiceberg.partitioning import PartitionKey
from pyiceberg.table.locations import LocationProvider
from pyiceberg.transforms import DayTransform, HourTransform
from pyiceberg.typedef import Properties
from ulid import ULID

from icebergdo.errors import BadNameError

# pyiceberg's `write.py-location-provider.impl`. Never stored on a table (a pyiceberg without icebergdo
# installed could not import it and would refuse to write): icebergdo's own tables (`AdrTable`) and
# writes (`iceberg.datafiles.write_data_files`) name it for themselves. Tables created before that
# carried it; `iceberg.catalog` removes it from them on first load (see `LEGACY_PROVIDER_KEY`).
PROVIDER_IMPL = "icebergdo.layout.AdrLocationProvider"
LEGACY_PROVIDER_KEY = "write.py-location-provider.impl"
MANIFESTS_PATH_PROPERTY = "icebergdo.write.manifests.path"
# Set only in the metadata handed to one write (iceberg.datafiles.write_data_files), never on a table.
FILE_PREFIX_PROPERTY = "icebergdo.write.file-prefix"
EVENTS_NAMESPACE = "events"
EVENTS_TABLE = "events.raw"
CATALOG_FOLDER = "catalog"  # {warehouse}/catalog/{ns}.{table}/: every table's metadata
# icebergdo's own bookkeeping tables (maintenance leases on a REST catalog): hidden from `Tables.tables()`.
SYSTEM_NAMESPACE = "icebergdo_system"
RESERVED_NAMESPACES = frozenset({EVENTS_NAMESPACE, CATALOG_FOLDER, SYSTEM_NAMESPACE})

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EVENT_FILE_RE = re.compile(r"events/\d{4}/\d{2}/\d{2}/\d{2}/[0-9A-Z]{26}\.parquet$")


def validate_name(part: str, what: str = "name") -> str:
    """Reject anything that could leave its folder (`/`, `..`) or split an identifier (`.`)."""
    if not isinstance(part, str) or not _NAME.match(part):
        raise BadNameError(
            f"invalid {what} {part!r}: use letters, digits, '_' or '-' (no '/', '.', '..' or spaces, at most 128 chars)"
        )
    return part


def is_reserved(namespace: str) -> bool:
    """`events` and `catalog` in any case: folders of the warehouse root that belong to icebergdo.

    Matched case-insensitively because DuckDB and Spark fold identifiers (`Events.x` is `events.x`
    to them) and a case-insensitive file system folds folder names.
    """
    return namespace.lower() in RESERVED_NAMESPACES


def check_collection_namespace(namespace: str) -> str:
    """A CDC collection's namespace: a valid name that is not reserved (its data goes to `{namespace}/…`)."""
    validate_name(namespace, "namespace")
    if is_reserved(namespace):
        raise BadNameError(f"namespace {namespace!r} is reserved ({', '.join(sorted(RESERVED_NAMESPACES))}, in any case)")
    return namespace


def split_identifier(identifier: str | tuple[str, ...]) -> tuple[str, str]:
    """`"ns.table"` → `("ns", "table")`, validating both parts."""
    parts = tuple(identifier) if isinstance(identifier, tuple) else tuple(str(identifier).split("."))
    if len(parts) != 2:
        raise BadNameError(f"invalid table name {'.'.join(parts)!r}: expected 'namespace.table'")
    return validate_name(parts[0], "namespace"), validate_name(parts[1], "table")


def table_location(warehouse: str, identifier: str) -> str:
    ns, name = split_identifier(identifier)
    return f"{warehouse.rstrip('/')}/{CATALOG_FOLDER}/{ns}.{name}"


def data_location(warehouse: str, identifier: str, data_path: str) -> str:
    """`{warehouse}/{data_path}`, where a new table's data files go; never outside the warehouse.

    `data_path` is one or more valid names joined by `/` (no `..`, `.`, empty parts or URI): a
    path that could climb out of the warehouse is refused. A reserved namespace takes tables only
    spelled exactly (`events.raw`; never `catalog`, whose folder holds metadata), and a data path
    may not start with a reserved folder spelled differently (`Events/` would be `events/` on a
    case-insensitive file system, yet a different prefix to every path comparison).
    """
    ns, _ = split_identifier(identifier)
    if is_reserved(ns) and (ns not in RESERVED_NAMESPACES or ns == CATALOG_FOLDER):
        raise BadNameError(f"namespace {ns!r} is reserved ({', '.join(sorted(RESERVED_NAMESPACES))}, in any case)")
    parts = data_path.strip("/").split("/") if isinstance(data_path, str) else [data_path]
    for part in parts:
        validate_name(part, f"data path part (of {data_path!r})")
    if is_reserved(parts[0]) and parts[0] not in RESERVED_NAMESPACES:
        raise BadNameError(f"data path {data_path!r}: the folder {parts[0]!r} is reserved ({', '.join(sorted(RESERVED_NAMESPACES))}, in any case)")
    return f"{warehouse.rstrip('/')}/{'/'.join(parts)}"


def table_properties(warehouse: str, identifier: str, data_path: str) -> dict[str, str]:
    """Table properties that route writes into the ADR layout (validating `data_path`).

    Only standard Iceberg properties plus our manifests folder: any writer (Java, DuckDB, a plain
    pyiceberg) puts data files under `write.data.path` and metadata under `write.metadata.path`;
    icebergdo's LocationProvider adds the hour/day folders, ULID names and the manifests folder.
    """
    location = table_location(warehouse, identifier)
    return {
        "write.data.path": data_location(warehouse, identifier, data_path),
        "write.metadata.path": f"{location}/metadata",
        MANIFESTS_PATH_PROPERTY: f"{location}/manifests",
    }


def is_adr_table(properties: Properties) -> bool:
    """Does this table follow the ADR layout (created by icebergdo, or through our REST catalog)?"""
    return MANIFESTS_PATH_PROPERTY in properties or properties.get(LEGACY_PROVIDER_KEY) == PROVIDER_IMPL


def adr_write_properties(properties: Properties) -> dict[str, str]:
    """`properties` plus our LocationProvider, for the metadata handed to one of our own writes."""
    return {**properties, LEGACY_PROVIDER_KEY: PROVIDER_IMPL}


def collection_data_path(namespace: str, collection: str, part: str) -> str:
    """`{namespace}/{collection}/{part}` where part is `deltas`, `data` or `snapshots`."""
    return f"{validate_name(namespace, 'namespace')}/{validate_name(collection, 'collection')}/{part}"


def partition_dir(partition_key: PartitionKey | None) -> str:
    """The folder of one partition: hour → YYYY/MM/DD/HH, day → YYYY/MM/DD, others → name=value.

    `name=value` parts are URL-encoded as pyiceberg does (`quote_plus`), so a value holding `/`
    or `..` names one folder and can never climb out of the table's data path.
    """
    if partition_key is None or not partition_key.partition_spec.fields:
        return ""
    parts: list[str] = []
    record = partition_key.partition
    for pos, pfield in enumerate(partition_key.partition_spec.fields):
        value = record[pos]
        if value is None:
            parts.append(f"{quote_plus(pfield.name)}=null")
        elif isinstance(pfield.transform, HourTransform):
            parts.append((_EPOCH + timedelta(hours=int(value))).strftime("%Y/%m/%d/%H"))
        elif isinstance(pfield.transform, DayTransform):
            day = value if isinstance(value, int) else (value - _EPOCH.date()).days
            parts.append((_EPOCH + timedelta(days=int(day))).strftime("%Y/%m/%d"))
        else:
            source_type = partition_key.schema.find_type(pfield.source_id)
            text = pfield.transform.to_human_string(pfield.transform.result_type(source_type), value)
            parts.append(f"{quote_plus(pfield.name)}={quote_plus(text)}")
    return "/".join(parts)


class AdrLocationProvider(LocationProvider):
    """pyiceberg LocationProvider for the ADR layout (set as `write.py-location-provider.impl`)."""

    def __init__(self, table_location: str, table_properties: Properties):
        super().__init__(table_location, table_properties)
        self.file_prefix = table_properties.get(FILE_PREFIX_PROPERTY, "")
        self.manifests_path = (
            table_properties.get(MANIFESTS_PATH_PROPERTY) or f"{self.table_location.rstrip('/')}/manifests"
        ).rstrip("/")

    def new_data_location(self, data_file_name: str, partition_key: PartitionKey | None = None) -> str:
        ext = data_file_name.rsplit(".", 1)[-1] if "." in data_file_name else "parquet"
        name = f"{self.file_prefix}{ULID()}.{ext}"
        folder = partition_dir(partition_key)
        return f"{self.data_path}/{folder}/{name}" if folder else f"{self.data_path}/{name}"

    def new_metadata_location(self, metadata_file_name: str) -> str:
        if metadata_file_name.endswith(".avro"):
            return f"{self.manifests_path}/{metadata_file_name}"
        return f"{self.metadata_path}/{metadata_file_name}"
