"""Arrow schemas as new Iceberg schemas."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema, assign_fresh_schema_ids


def fresh_schema(arrow: pa.Schema, identifier: Sequence[str] = ()) -> Schema:
    """An Iceberg schema for `arrow` with fresh field ids; `identifier` names its identifier fields."""
    converted = assign_fresh_schema_ids(Catalog._convert_schema_if_needed(arrow))
    ids = [converted.find_field(k).field_id for k in identifier]
    return Schema(*converted.fields, identifier_field_ids=ids)
