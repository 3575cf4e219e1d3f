"""The Parquet options our data-file writer derives from table properties (icebergdo.iceberg.datafiles)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.types import IntegerType, ListType, LongType, MapType, NestedField, StringType, StructType

from icebergdo.iceberg.datafiles import DICTIONARY_EXCLUDE_PROPERTY, _leaf_paths, parquet_options

SCHEMA = Schema(
    NestedField(1, "id", StringType(), required=False),
    NestedField(2, "n", LongType(), required=False),
    NestedField(3, "s", StructType(NestedField(4, "a", StringType(), required=False),
                                   NestedField(5, "b", ListType(6, IntegerType(), element_required=False), required=False)), required=False),
    NestedField(7, "m", MapType(8, StringType(), 9, LongType(), value_required=False), required=False),
)


def _options(props: dict[str, str]) -> dict:
    return parquet_options(SCHEMA, props)


def test_page_row_limit_is_arrows_page_limit_not_its_batch_size() -> None:
    opts = _options({"write.parquet.page-row-limit": "500"})
    assert opts["max_rows_per_page"] == 500
    assert "write_batch_size" not in opts
    assert _options({})["max_rows_per_page"] == 20000  # Iceberg's default


def test_dictionary_exclusion_lists_every_other_leaf() -> None:
    assert "use_dictionary" not in _options({})
    opts = _options({DICTIONARY_EXCLUDE_PROPERTY: " id , s "})
    assert opts["use_dictionary"] == ["n", "m.key_value.key", "m.key_value.value"]


def test_leaf_paths_are_the_paths_arrow_writes(tmp_path: Path) -> None:
    """Our paths for nested fields equal the column paths of a Parquet file Arrow writes for the schema."""
    arrow_schema = schema_to_pyarrow(SCHEMA)
    pq.write_table(arrow_schema.empty_table(), tmp_path / "empty.parquet")
    meta = pq.ParquetFile(tmp_path / "empty.parquet").metadata
    written = [meta.schema.column(i).path for i in range(meta.num_columns)]
    ours = [p for f in SCHEMA.fields for p in _leaf_paths(f.name, f.field_type)]
    assert ours == written
