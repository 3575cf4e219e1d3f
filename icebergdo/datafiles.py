"""One append commit from an Arrow batch, cut into partitions without re-scanning it per partition.

pyiceberg's `Table.append` finds partitions by filtering the whole batch once per partition value
(`_determine_partitions`): for a batch spanning a few hours that is most of the cost of an append
(measured: 0.28 of 0.37 s for 250k events over 4 hours). Our batches are sorted by `ts`, so each
hour is one contiguous run: we cut zero-copy slices and give pyiceberg one write task per slice.
pyiceberg still writes the Parquet files, computes their statistics and commits the snapshot.
Batches whose partitions are not contiguous take pyiceberg's own path unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, bin_pack_arrow_table, pyarrow_to_schema, write_file
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table, TableProperties, WriteTask
from pyiceberg.utils.properties import property_as_bool, property_as_int


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


def partition_runs(spec: PartitionSpec, schema: Schema, batch: pa.Table) -> list[tuple[PartitionKey, pa.Table]] | None:
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


def append(table: Table, batch: pa.Table, snapshot_properties: dict[str, str]) -> None:
    """`table.append(batch)` in one commit, with contiguous partitions cut as slices."""
    runs = partition_runs(table.spec(), table.schema(), batch)
    if runs is None:
        table.append(batch, snapshot_properties=snapshot_properties)
        return
    with table.transaction() as tx:
        metadata = tx.table_metadata
        _check_pyarrow_schema_compatible(metadata.schema(), provided_schema=batch.schema, format_version=metadata.format_version)
        merge = property_as_bool(metadata.properties, TableProperties.MANIFEST_MERGE_ENABLED, TableProperties.MANIFEST_MERGE_ENABLED_DEFAULT)
        update = tx.update_snapshot(snapshot_properties=snapshot_properties)
        with (update.merge_append() if merge else update.fast_append()) as producer:
            target = property_as_int(
                metadata.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT
            )
            task_schema = pyarrow_to_schema(batch.schema, name_mapping=metadata.schema().name_mapping, format_version=metadata.format_version)
            counter = itertools.count()

            def tasks() -> Iterator[WriteTask]:
                for key, part in runs:
                    for batches in bin_pack_arrow_table(part, target):
                        yield WriteTask(
                            write_uuid=producer.commit_uuid,
                            task_id=next(counter),
                            record_batches=batches,
                            partition_key=key,
                            schema=task_schema,
                        )

            for data_file in write_file(io=table.io, table_metadata=metadata, tasks=tasks()):
                producer.append_data_file(data_file)
