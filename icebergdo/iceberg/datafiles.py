"""Arrow → Iceberg data files, in one place: appends, the CDC fold and compaction all write through here.

`write_data_files` is the one way we turn Arrow rows into data files: pyiceberg writes the Parquet,
computes the statistics and names the file through the table's LocationProvider (the ADR layout).
The file-name prefix (`_compact-` for compaction outputs) is a parameter of the call, carried in the
table properties handed to pyiceberg for that write only, so writers and compaction running in one
process never see each other's prefix.

The append fast path: pyiceberg's `Table.append` finds partitions by filtering the whole batch once
per partition value (`_determine_partitions`): for a batch spanning a few hours that is most of the
cost of an append (measured: 0.28 of 0.37 s for 250k events over 4 hours). Our batches are sorted
by `ts`, so each hour is one contiguous run: `partitions` cuts zero-copy slices and only falls back
to pyiceberg's partitioning when a partition value recurs in two runs.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import (
    _check_pyarrow_schema_compatible,
    _determine_partitions,
    bin_pack_arrow_table,
    pyarrow_to_schema,
    write_file,
)
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table, TableProperties, WriteTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.typedef import Properties
from pyiceberg.utils.properties import property_as_bool, property_as_int

from icebergdo.layout import FILE_PREFIX_PROPERTY, adr_write_properties, is_adr_table

Part = tuple[PartitionKey | None, pa.Table]


def target_file_size(properties: Properties) -> int:
    """`write.target-file-size-bytes` of a table (Iceberg's default, 512 MiB, when unset)."""
    size = property_as_int(properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)
    return int(size or TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)


def sort_by(batch: pa.Table, columns: str | list[str]) -> pa.Table:
    """The batch in `columns` order. Events mostly arrive in order, and checking one column is ~40x
    cheaper than a sort (a full `take`), so an already-ordered batch is returned as it is."""
    columns = [columns] if isinstance(columns, str) else list(columns)
    if not columns or batch.num_rows < 2:
        return batch
    if len(columns) == 1:
        values = batch.column(columns[0])
        if not values.null_count and pc.all(pc.greater_equal(values.slice(1), values.slice(0, len(values) - 1))).as_py():
            return batch
    return batch.take(pc.sort_indices(batch, [(c, "ascending") for c in columns]))


def partition_runs(spec: PartitionSpec, schema: Schema, batch: pa.Table) -> list[Part] | None:
    """The batch as (partition key, zero-copy slice) runs, or None if a partition value recurs in two runs."""
    if spec.is_unpartitioned() or batch.num_rows == 0:
        return None
    keys = []
    for pfield in spec.fields:
        name = schema.find_column_name(pfield.source_id)
        if name is None or "." in name or name not in batch.column_names:
            return None
        values = pfield.transform.pyarrow_transform(schema.find_field(pfield.source_id).field_type)(batch.column(name))
        values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if values.null_count:
            return None
        keys.append(values)
    n = batch.num_rows
    changed = None
    for values in keys:
        step = pc.not_equal(values.slice(1), values.slice(0, n - 1))
        changed = step if changed is None else pc.or_(changed, step)
    starts = [0] + [i + 1 for i in pc.indices_nonzero(changed).to_pylist()]
    ends = starts[1:] + [n]
    runs = [tuple(values[s].as_py() for values in keys) for s in starts]
    if len(set(runs)) != len(runs):
        return None
    return [
        (
            PartitionKey(
                field_values=[PartitionFieldValue(field=f, value=v) for f, v in zip(spec.fields, run, strict=True)],
                partition_spec=spec,
                schema=schema,
            ),
            batch.slice(start, end - start),
        )
        for run, start, end in zip(runs, starts, ends, strict=True)
    ]


def partitions(spec: PartitionSpec, schema: Schema, batch: pa.Table) -> list[Part]:
    """The batch cut by partition: contiguous runs as slices, else pyiceberg's partitioning."""
    if spec.is_unpartitioned():
        return [(None, batch)] if batch.num_rows else []
    runs = partition_runs(spec, schema, batch)
    if runs is not None:
        return runs
    return [(p.partition_key, p.arrow_table_partition) for p in _determine_partitions(spec=spec, schema=schema, arrow_table=batch)]


def partition_key_of(spec: PartitionSpec, schema: Schema, row: pa.Table) -> PartitionKey | None:
    """The partition key of the first row of `row` (for data known to lie in one partition)."""
    if spec.is_unpartitioned():
        return None
    return next(iter(_determine_partitions(spec=spec, schema=schema, arrow_table=row.slice(0, 1)))).partition_key


def check_schema(metadata: TableMetadata, schema: pa.Schema) -> None:
    """Raise ValueError when Arrow data with `schema` cannot be written to the table as it is."""
    _check_pyarrow_schema_compatible(metadata.schema(), provided_schema=schema, format_version=metadata.format_version)


def write_data_files(
    metadata: TableMetadata,
    io: FileIO,
    parts: Iterable[Part],
    *,
    target_size: int | None = None,
    file_prefix: str = "",
    write_uuid: uuid.UUID | None = None,
) -> list[DataFile]:
    """Write each (partition key, rows) part as data files of the table `metadata` describes.

    `target_size` (Arrow bytes) splits a part into several files; None writes one file per part.
    `file_prefix` goes before the ULID of every file name (this call only). The files are not
    committed: the caller adds them to a snapshot, or deletes them if it gives up.
    """
    parts = [(key, rows) for key, rows in parts if rows.num_rows]
    if not parts:
        return []
    arrow_schema = parts[0][1].schema
    task_schema = pyarrow_to_schema(arrow_schema, name_mapping=metadata.schema().name_mapping, format_version=metadata.format_version)
    if is_adr_table(metadata.properties):  # our LocationProvider, for this write only (see layout.PROVIDER_IMPL)
        extra = {FILE_PREFIX_PROPERTY: file_prefix} if file_prefix else {}
        metadata = metadata.model_copy(update={"properties": {**adr_write_properties(metadata.properties), **extra}})
    elif file_prefix:
        metadata = metadata.model_copy(update={"properties": {**metadata.properties, FILE_PREFIX_PROPERTY: file_prefix}})
    write_uuid = write_uuid or uuid.uuid4()
    counter = itertools.count()

    def tasks() -> Iterator[WriteTask]:
        for key, rows in parts:
            chunks = bin_pack_arrow_table(rows, target_size) if target_size else [rows.to_batches()]
            for batches in chunks:
                yield WriteTask(write_uuid=write_uuid, task_id=next(counter), record_batches=batches, partition_key=key, schema=task_schema)

    return list(write_file(io=io, table_metadata=metadata, tasks=tasks()))


def append(table: Table, batch: pa.Table, snapshot_properties: dict[str, str]) -> None:
    """`table.append(batch)` in one commit, with contiguous partitions cut as slices.

    Raises ValueError/TypeError when the batch does not fit the table's schema (nothing written).
    """
    with table.transaction() as tx:
        metadata = tx.table_metadata
        check_schema(metadata, batch.schema)
        merge = property_as_bool(metadata.properties, TableProperties.MANIFEST_MERGE_ENABLED, TableProperties.MANIFEST_MERGE_ENABLED_DEFAULT)
        update = tx.update_snapshot(snapshot_properties=snapshot_properties)
        with (update.merge_append() if merge else update.fast_append()) as producer:
            parts = partitions(metadata.spec(), metadata.schema(), batch)
            for data_file in write_data_files(
                metadata, table.io, parts, target_size=target_file_size(metadata.properties), write_uuid=producer.commit_uuid
            ):
                producer.append_data_file(data_file)
