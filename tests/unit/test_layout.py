"""The ADR-0002 path layout without a catalog: partition folders, the LocationProvider's file and
metadata locations (and the per-write file prefix), table properties, and every name check."""

from __future__ import annotations

import posixpath
import re
from datetime import UTC, date, datetime

import pytest
from pyiceberg.partitioning import PartitionField, PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform, TruncateTransform
from pyiceberg.types import DateType, LongType, NestedField, StringType, TimestamptzType
from ulid import ULID

from icebergdo import layout
from icebergdo.errors import BadNameError
from icebergdo.schema import EVENT_PARTITION_SPEC, EVENT_SCHEMA

WH = "s3://bucket/lake"
SCHEMA = Schema(
    NestedField(1, "ts", TimestamptzType(), required=True),
    NestedField(2, "k", StringType()),
    NestedField(3, "n", LongType()),
    NestedField(4, "d", DateType()),
)


def key(spec: PartitionSpec, schema: Schema, *values: object) -> PartitionKey:
    return PartitionKey([PartitionFieldValue(f, v) for f, v in zip(spec.fields, values, strict=True)], spec, schema)


def hours(t: datetime) -> int:
    return int(t.timestamp() // 3600)


# -- partition folders ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "t, folder",
    [
        (datetime(2026, 11, 25, 10, 59, tzinfo=UTC), "2026/11/25/10"),
        (datetime(1970, 1, 1, 0, tzinfo=UTC), "1970/01/01/00"),
        (datetime(1969, 12, 31, 23, tzinfo=UTC), "1969/12/31/23"),  # before the epoch: negative hours
        (datetime(2028, 2, 29, 23, tzinfo=UTC), "2028/02/29/23"),
    ],
)
def test_hour_partition_is_year_month_day_hour(t: datetime, folder: str) -> None:
    assert layout.partition_dir(key(EVENT_PARTITION_SPEC, EVENT_SCHEMA, hours(t))) == folder


def test_day_identity_bucket_truncate_and_null_folders() -> None:
    spec = PartitionSpec(
        PartitionField(1, 1000, DayTransform(), "ts_day"),
        PartitionField(2, 1001, IdentityTransform(), "k"),
        PartitionField(3, 1002, BucketTransform(8), "n_bucket"),
        PartitionField(4, 1003, IdentityTransform(), "d"),
    )
    day = (date(2026, 11, 25) - date(1970, 1, 1)).days
    assert layout.partition_dir(key(spec, SCHEMA, day, "shop", 5, day)) == "2026/11/25/k=shop/n_bucket=5/d=2026-11-25"
    assert layout.partition_dir(key(spec, SCHEMA, None, None, 0, None)) == "ts_day=null/k=null/n_bucket=0/d=null"
    trunc = PartitionSpec(PartitionField(2, 1000, TruncateTransform(2), "k_trunc"))
    assert layout.partition_dir(key(trunc, SCHEMA, "ab")) == "k_trunc=ab"


@pytest.mark.parametrize("value", ["../../../etc", "a/b", "..", "a b&c=d", "é/€"])
def test_identity_values_never_leave_their_folder(value: str) -> None:
    spec = PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "k"))
    folder = layout.partition_dir(key(spec, SCHEMA, value))
    assert folder.startswith("k=") and "/" not in folder  # one folder, never `..` itself
    assert posixpath.normpath(f"lake/data/{folder}/f.parquet").startswith("lake/data/k=")


def test_unpartitioned_has_no_folder() -> None:
    assert layout.partition_dir(None) == ""
    assert layout.partition_dir(key(PartitionSpec(), SCHEMA)) == ""


# -- the LocationProvider --------------------------------------------------------------------
def provider(extra: dict[str, str] | None = None, identifier: str = "events.raw", data_path: str = "events") -> layout.AdrLocationProvider:
    props = {**layout.table_properties(WH, identifier, data_path), **(extra or {})}
    return layout.AdrLocationProvider(layout.table_location(WH, identifier), props)


def test_data_files_follow_the_adr_layout_with_ulid_names() -> None:
    p = provider()
    t = datetime(2026, 11, 25, 10, tzinfo=UTC)
    before = ULID()
    paths = [p.new_data_location("00000-0-abc.parquet", key(EVENT_PARTITION_SPEC, EVENT_SCHEMA, hours(t))) for _ in range(50)]
    assert len(set(paths)) == 50
    for path in paths:
        assert path.startswith(f"{WH}/events/2026/11/25/10/")
        assert layout.EVENT_FILE_RE.search(path), path
        assert ULID.from_str(path.rsplit("/", 1)[1].removesuffix(".parquet")).milliseconds >= before.milliseconds
    assert re.fullmatch(rf"{WH}/events/[0-9A-Z]{{26}}\.parquet", p.new_data_location("x.parquet"))
    assert p.new_data_location("x.orc").endswith(".orc") and p.new_data_location("noext").endswith(".parquet")


def test_file_prefix_is_read_from_the_properties_of_one_write() -> None:
    t = key(EVENT_PARTITION_SPEC, EVENT_SCHEMA, hours(datetime(2026, 11, 25, 10, tzinfo=UTC)))
    compacting = provider({layout.FILE_PREFIX_PROPERTY: "_compact-"}).new_data_location("x.parquet", t)
    plain = provider().new_data_location("x.parquet", t)
    assert re.search(r"/events/2026/11/25/10/_compact-[0-9A-Z]{26}\.parquet$", compacting)
    assert not layout.EVENT_FILE_RE.search(compacting)
    assert layout.EVENT_FILE_RE.search(plain)  # a provider built without the property: no prefix, ever


def test_metadata_and_manifests_locations() -> None:
    p = provider(identifier="shop.orders", data_path="shop/orders/data")
    assert p.new_metadata_location("00001-uuid.metadata.json") == f"{WH}/catalog/shop.orders/metadata/00001-uuid.metadata.json"
    assert p.new_metadata_location("snap-1-uuid.avro") == f"{WH}/catalog/shop.orders/manifests/snap-1-uuid.avro"
    bare = layout.AdrLocationProvider(f"{WH}/catalog/a.b", {})  # a table created elsewhere: manifests beside metadata
    assert bare.new_metadata_location("m.avro") == f"{WH}/catalog/a.b/manifests/m.avro"


def test_table_properties() -> None:
    props = layout.table_properties(WH + "/", "shop.orders", "/shop/orders/deltas/")
    assert props == {  # standard properties only: no `write.py-location-provider.impl` a plain pyiceberg could not load
        "write.data.path": f"{WH}/shop/orders/deltas",
        "write.metadata.path": f"{WH}/catalog/shop.orders/metadata",
        layout.MANIFESTS_PATH_PROPERTY: f"{WH}/catalog/shop.orders/manifests",
    }
    assert layout.table_properties(WH, "events.raw", "events")["write.data.path"] == f"{WH}/events"
    assert layout.table_location(WH, "events.raw") == f"{WH}/catalog/events.raw"


# -- names -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["orders", "Orders_2", "a-b", "_x", "0", "x" * 128])
def test_valid_names(name: str) -> None:
    assert layout.validate_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a.b", "a b", "-x", "x" * 129, "é", "a\\b", "a\x00", None, 3])
def test_invalid_names(name: object) -> None:
    with pytest.raises(BadNameError, match="invalid"):
        layout.validate_name(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("identifier", ["raw", "a.b.c", "../x.y", "a./b", ("a",)])
def test_bad_identifiers(identifier: str | tuple[str, ...]) -> None:
    with pytest.raises(BadNameError):
        layout.split_identifier(identifier)


def test_split_identifier() -> None:
    assert layout.split_identifier("shop.orders") == ("shop", "orders") == layout.split_identifier(("shop", "orders"))


@pytest.mark.parametrize("data_path", ["../../x", "..", "a/../../x", "a/./b", "a//b", "", "/", "s3://other/x", "a b", "a\\..\\x"])
def test_data_path_cannot_leave_the_warehouse(data_path: str) -> None:
    with pytest.raises(BadNameError):
        layout.table_properties(WH, "shop.orders", data_path)


@pytest.mark.parametrize("data_path", ["CATALOG/x", "Events/x", "EVENTS"])
def test_data_path_cannot_start_with_a_reserved_folder_spelled_differently(data_path: str) -> None:
    with pytest.raises(BadNameError, match="reserved"):
        layout.table_properties(WH, "shop.orders", data_path)
    # spelled exactly, a nested prefix is allowed (maintenance keeps other tables' prefixes apart)
    assert layout.table_properties(WH, "shop.orders", data_path.lower())["write.data.path"] == f"{WH}/{data_path.lower()}"


@pytest.mark.parametrize("namespace", ["events", "Events", "EVENTS", "catalog", "Catalog", "CATALOG"])
def test_reserved_namespaces_in_any_case(namespace: str) -> None:
    assert layout.is_reserved(namespace)
    with pytest.raises(BadNameError, match="reserved"):
        layout.check_collection_namespace(namespace)


def test_table_namespaces_that_shadow_reserved_ones() -> None:
    for ns in ("Events", "CATALOG", "catalog"):
        with pytest.raises(BadNameError, match="reserved"):
            layout.table_properties(WH, f"{ns}.x", "shop/x")
    assert layout.table_properties(WH, "events.rejected", "events/rejected")["write.data.path"] == f"{WH}/events/rejected"
    assert layout.check_collection_namespace("shop") == "shop" and not layout.is_reserved("eventsx")
