"""Arrow → Iceberg data files, in one place: appends, the CDC fold and compaction all write through here.

`write_data_files` is the one way we turn Arrow rows into data files: pyiceberg writes the Parquet,
computes the statistics and names the file through the table's LocationProvider (the ADR layout).
The file-name prefix (`_compact-` for compaction outputs) is a parameter of the call, carried in the
table properties handed to pyiceberg for that write only, so writers and compaction running in one
process never see each other's prefix.

The append fast path (`write_append`): pyiceberg's `Table.append` finds partitions by filtering the
whole batch once per partition value (`_determine_partitions`): for a batch spanning a few hours that
was most of the cost of an append (0.28 of 0.37 s for 250k events over 4 hours). Instead:

- **Order once, move each row once.** The sort order (`ts` for events) is computed as row indices
  (`order`: for one integer/time column, a single NumPy sort of (value, position) keys, ~7x cheaper
  than Arrow's `sort_indices`); when the sort column also determines the partition (hour(ts)), each
  partition is a contiguous run of those indices. The rows are never re-ordered as a whole: each
  data file's rows are gathered (`take`) from its slice of the indices by the thread that writes it,
  so the gathers run in parallel with the Parquet encoding, and memory holds a few files' worth of
  moved rows instead of a sorted copy of the batch (measured on 1M realistic events: the full
  `take` cost as much CPU as a third of the Parquet encoding, and its 350 MB of fresh pages more).
  A batch already in order (events sent in time order) is cut into zero-copy slices.
- **One file per core in memory.** Gathering and encoding are CPU work, so at most one file per
  usable core is gathered and encoded at once (`encoding_slot`); the rest of pyiceberg's pool
  (cores + 4 threads) only waits for uploads. With every thread gathering, six files' rows were
  held on two cores (write_rows' peak Arrow memory for 1M events: 227 MB; now 92 MB), fresh from
  the kernel each time.
- Every file is still sorted by the sort column: compaction merges files relying on it, and readers
  prune by the files' `ts` bounds.
- When a partition value recurs in two runs (partitions not determined by the sort column), the
  batch is sorted as a whole and partitioned by pyiceberg's own `_determine_partitions`.

An append is two steps, so many writers can share a table without queueing on each other's uploads:
`write_append` writes and uploads the data files (slow, done in parallel, outside any lock), and
`commit_append` adds them in one snapshot (fast; the caller holds the table's commit lock). The
commit can carry table properties and a `LedgerGuard` in the same metadata update: that is how the
exactly-once ledger (`icebergdo.ledger`) is kept atomic with the data.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field
from pyiceberg.exceptions import ValidationException
from pyiceberg.io import FileIO, OutputFile
from pyiceberg.io.fileformat import DataFileStatistics, FileFormatFactory
from pyiceberg.io.pyarrow import (
    ParquetFormatWriter,
    _check_pyarrow_schema_compatible,
    _determine_partitions,
    _get_parquet_writer_kwargs,
    _to_requested_schema,
    bin_pack_arrow_table,
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
    pyarrow_to_schema,
    write_file,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.schema import Schema, sanitize_column_names
from pyiceberg.table import DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE, Table, TableProperties, Transaction, WriteTask
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import ValidatableTableRequirement
from pyiceberg.typedef import Properties, Record
from pyiceberg.types import ListType, MapType, StructType
from pyiceberg.utils.concurrent import ExecutorFactory
from pyiceberg.utils.config import Config
from pyiceberg.utils.properties import property_as_bool, property_as_int

from icebergdo import arrays, ledger
from icebergdo.iceberg.catalog import accepts_own_requirements
from icebergdo.iceberg.metadata import apply_updates
from icebergdo.layout import FILE_PREFIX_PROPERTY, adr_write_properties, is_adr_table

Part = tuple[PartitionKey | None, pa.Table]


def target_file_size(properties: Properties) -> int:
    """`write.target-file-size-bytes` of a table (Iceberg's default, 512 MiB, when unset)."""
    size = property_as_int(properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)
    return int(size or TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)


def order(batch: pa.Table, columns: str | list[str]) -> pa.Array | None:
    """Row indices that put `batch` in ascending `columns` order (stable: ties keep their input
    order), or None when it is in that order already.

    Events mostly arrive in order, and checking one column is ~40x cheaper than a sort, so that is
    tried first. One null-free integer or time column (`ts`) is ordered by a single NumPy sort of
    64-bit keys (value - min) << b | position (b bits hold a position): the keys are distinct, so
    the sort needs no stability of its own, and the low bits are the indices (1M events: 7 ms,
    against 70 ms for Arrow's `sort_indices`). Other cases go to `sort_indices`.
    """
    columns = [columns] if isinstance(columns, str) else list(columns)
    if not columns or batch.num_rows < 2:
        return None
    if len(columns) == 1:
        values = batch.column(columns[0])
        if not values.null_count:
            if pc.all(pc.greater_equal(values.slice(1), values.slice(0, len(values) - 1))).as_py():
                return None
            fast = _key_order(values)
            if fast is not None:
                return fast
    return pc.sort_indices(batch, [(c, "ascending") for c in columns])


def _key_order(values: pa.Array | pa.ChunkedArray) -> pa.Array | None:
    """The stable ascending order of a null-free integer/time column by one sort of (value, position)
    keys, or None when the column's type or value range does not fit the keys."""
    t = values.type
    if not (pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_duration(t)
            or (pa.types.is_integer(t) and t != pa.uint64())):
        return None
    values = arrays.array(values)
    n = len(values)
    a = np.asarray(values.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    bits = (n - 1).bit_length()
    lo, hi = int(a.min()), int(a.max())
    if hi - lo >= 1 << (64 - bits):  # a span too wide to leave room for the position
        return None
    keys = (a - lo).view(np.uint64) << np.uint64(bits)  # a - lo fits: the span is below 2**63
    keys |= np.arange(n, dtype=np.uint64)
    keys.sort()
    keys &= np.uint64((1 << bits) - 1)
    return pa.array(keys.view(np.int64))


def partition_runs(spec: PartitionSpec, schema: Schema, batch: pa.Table) -> list[Part] | None:
    """The batch as (partition key, zero-copy slice) runs, or None if a partition value recurs in two runs."""
    runs = _runs(spec, schema, batch.column_names, batch.column)
    if runs is None:
        return None
    return [(key, batch.slice(start, end - start)) for key, start, end in runs]


def _runs(
    spec: PartitionSpec, schema: Schema, names: list[str], column: Callable[[str], pa.Array | pa.ChunkedArray]
) -> list[tuple[PartitionKey, int, int]] | None:
    """(partition key, start, end) of each run of rows with one partition value, from the rows'
    columns as `column(name)` gives them; None when a value recurs in two runs (or cannot be computed
    here: nested or missing source columns, nulls, no rows)."""
    if spec.is_unpartitioned():
        return None
    keys = []
    for pfield in spec.fields:
        name = schema.find_column_name(pfield.source_id)
        if name is None or "." in name or name not in names:
            return None
        values = pfield.transform.pyarrow_transform(schema.find_field(pfield.source_id).field_type)(column(name))
        values = arrays.array(values)
        if values.null_count:
            return None
        keys.append(values)
    n = len(keys[0])
    if n == 0:
        return None
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
            start,
            end,
        )
        for run, start, end in zip(runs, starts, ends, strict=True)
    ]


def partitions(spec: PartitionSpec, schema: Schema, batch: pa.Table) -> list[Part]:
    """The batch cut by partition: contiguous runs as slices, else pyiceberg's partitioning."""
    if spec.is_unpartitioned():
        return [(None, batch)] if batch.num_rows else []
    runs = partition_runs(spec, schema, batch)
    return runs if runs is not None else _pyiceberg_partitions(spec, schema, batch)


def _pyiceberg_partitions(spec: PartitionSpec, schema: Schema, batch: pa.Table) -> list[Part]:
    """pyiceberg's own partitioning (one filter of the batch per partition value): for batches whose
    partition values recur in several runs."""
    return [(p.partition_key, p.arrow_table_partition) for p in _determine_partitions(spec=spec, schema=schema, arrow_table=batch)]


def partition_key_of(spec: PartitionSpec, schema: Schema, row: pa.Table) -> PartitionKey | None:
    """The partition key of the first row of `row` (for data known to lie in one partition)."""
    if spec.is_unpartitioned():
        return None
    return next(iter(_determine_partitions(spec=spec, schema=schema, arrow_table=row.slice(0, 1)))).partition_key


def check_schema(metadata: TableMetadata, schema: pa.Schema) -> None:
    """Raise ValueError when Arrow data with `schema` cannot be written to the table as it is.

    The message is one line naming the fields: pyiceberg reports a type mismatch as a multi-line
    table drawn with box characters, which a one-line error would cut to "Mismatch in fields:".
    """
    try:
        _check_pyarrow_schema_compatible(metadata.schema(), provided_schema=schema, format_version=metadata.format_version)
    except ValueError as e:
        raise ValueError(one_line_mismatch(str(e))) from None


def one_line_mismatch(message: str) -> str:
    """pyiceberg's "Mismatch in fields:" table → "field n: table has optional string, the batch optional long; …"."""
    if "\n" not in message.strip():
        return message.strip()
    rows = []
    for line in message.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) >= 4 and cells[1].startswith("❌"):
            rows.append(f"field {cells[2]!r}: the batch has {cells[3]!r}" if cells[3] else f"field {cells[2]!r}")
    head = message.strip().splitlines()[0].rstrip(":")
    return f"{head}: {'; '.join(rows)}" if rows else " ".join(line.strip() for line in message.splitlines() if line.strip())


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
    metadata = _write_metadata(metadata, file_prefix)
    write_uuid = write_uuid or uuid.uuid4()
    counter = itertools.count()

    def tasks() -> Iterator[WriteTask]:
        for key, rows in parts:
            chunks = bin_pack_arrow_table(rows, target_size) if target_size else [rows.to_batches()]
            for batches in chunks:
                yield WriteTask(write_uuid=write_uuid, task_id=next(counter), record_batches=batches, partition_key=key, schema=task_schema)

    return list(write_tasks(io, metadata, tasks()))


def _write_metadata(metadata: TableMetadata, file_prefix: str) -> TableMetadata:
    """The metadata handed to pyiceberg's writer for one write: our LocationProvider (see
    layout.PROVIDER_IMPL) and the file-name prefix, for this write only."""
    if is_adr_table(metadata.properties):
        extra = {FILE_PREFIX_PROPERTY: file_prefix} if file_prefix else {}
        return metadata.model_copy(update={"properties": {**adr_write_properties(metadata.properties), **extra}})
    if file_prefix:
        return metadata.model_copy(update={"properties": {**metadata.properties, FILE_PREFIX_PROPERTY: file_prefix}})
    return metadata


def write_rows(
    metadata: TableMetadata,
    io: FileIO,
    batch: pa.Table,
    *,
    sort_by: str | list[str] | None = None,
    target_size: int | None = None,
) -> list[DataFile]:
    """Write `batch` as data files of the table `metadata` describes, each file's rows in `sort_by`
    order, cut by partition and into files of about `target_size` Arrow bytes (None: one per partition).

    The rows are ordered as indices and gathered file by file in parallel (see the module
    docstring); files already written are deleted again if another one fails.
    """
    n = batch.num_rows
    if n == 0:
        return []
    indices = order(batch, sort_by) if sort_by else None
    if indices is not None:
        batch = arrays.contiguous(batch)  # one gather from many chunks costs ~2x one from a single chunk (measured)
    spec, schema = metadata.spec(), metadata.schema()
    runs: list[tuple[PartitionKey | None, int, int]]
    if spec.is_unpartitioned():
        runs = [(None, 0, n)]
    else:
        found = _runs(spec, schema, batch.column_names,
                      lambda name: batch.column(name) if indices is None else batch.column(name).take(indices))
        if found is None:  # partitions interleave in sort order: sort the whole batch, pyiceberg partitions it
            rows = batch if indices is None else batch.take(indices)
            return write_data_files(metadata, io, _pyiceberg_partitions(spec, schema, rows), target_size=target_size)
        runs = list(found)
    row_bytes = max(1.0, batch.nbytes / n)
    cuts: list[tuple[PartitionKey | None, int, int]] = []
    for key, start, end in runs:
        files = max(1, math.ceil((end - start) * row_bytes / target_size)) if target_size else 1
        per_file = math.ceil((end - start) / files)
        cuts += [(key, s, min(per_file, end - s)) for s in range(start, end, per_file)]
    task_schema = pyarrow_to_schema(batch.schema, name_mapping=schema.name_mapping, format_version=metadata.format_version)
    writer = DataFileWriter(io, _write_metadata(metadata, ""))
    write_uuid = uuid.uuid4()

    def write_one(task_id: int, key: PartitionKey | None, start: int, length: int) -> DataFile:
        with encoding_slot():  # the gather and the encoding are CPU work: at most one file per core
            rows = batch.slice(start, length) if indices is None else batch.take(indices.slice(start, length))
            encoded = writer.encode(WriteTask(write_uuid=write_uuid, task_id=task_id, record_batches=rows.to_batches(), partition_key=key, schema=task_schema))
            del rows  # freed before the upload waits, not after
        return encoded.finish()

    pool = _executor()
    futures: list[Future[DataFile]] = [pool.submit(write_one, i, key, start, length) for i, (key, start, length) in enumerate(cuts)]
    written: list[DataFile] = []
    error: BaseException | None = None
    for future in futures:
        try:
            written.append(future.result())
        except BaseException as e:  # noqa: BLE001 - re-raised below, once every file of this write is accounted for
            error = error or e
    if error is not None:
        delete_files(io, written)
        raise error
    return written


# -- one data file ------------------------------------------------------------------------------
DICTIONARY_EXCLUDE_PROPERTY = "icebergdo.write.parquet.dictionary-exclude"


def write_tasks(io: FileIO, metadata: TableMetadata, tasks: Iterable[WriteTask]) -> Iterator[DataFile]:
    """Each task as one data file, in parallel on pyiceberg's executor (as pyiceberg's `write_file`)."""
    return iter(ExecutorFactory.get_or_create().map(DataFileWriter(io, metadata).write, tasks))


class DataFileWriter:
    """Writes tasks as Parquet data files of one table version: pyiceberg's `write_file`, one task at a
    time in the calling thread, with our Parquet options (`_ParquetWriter`).

    The steps are pyiceberg's (its schema projection with field ids, its LocationProvider for the
    name, its statistics from the Parquet footer, `DataFile.from_args`), but what every file of one
    write shares is derived once, not per file as pyiceberg does: the sanitized file schema, the
    statistics plan, the column-path mapping, the LocationProvider and the writer options. For the
    small files of a streaming commit (100 events over 12 hours: 12 files of ~8 rows) those were
    half of the 1.1 ms each file took (profiled). A table whose files are not Parquet is written by
    pyiceberg's `write_file` as it is.
    """

    def __init__(self, io: FileIO, metadata: TableMetadata) -> None:
        self.io, self.metadata = io, metadata
        self.parquet = _writes_parquet(metadata)
        self.schema = sanitize_column_names(metadata.schema())
        self.downcast = Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE) or False
        self.model = FileFormatFactory.get(FileFormat.PARQUET)
        self.provider = load_location_provider(table_location=metadata.location, table_properties=metadata.properties)
        self.stats = compute_statistics_plan(self.schema, metadata.properties)
        self.paths = parquet_path_to_id_mapping(self.schema)
        self.options = parquet_options(self.schema, metadata.properties)

    def write(self, task: WriteTask) -> DataFile:
        """One task as one data file: encoded in an `encoding_slot`, then closed (uploaded)."""
        with encoding_slot():
            encoded = self.encode(task)
        return encoded.finish()

    def encode(self, task: WriteTask) -> EncodedFile:
        """Encode the task's rows into the data file's output stream (the CPU work of a write);
        `finish()` on the result closes the file (for an object store: waits for the upload) and
        describes it. The task's rows are not needed after this returns."""
        if not self.parquet:
            done = next(iter(write_file(io=self.io, table_metadata=self.metadata, tasks=iter([task]))))
            return EncodedFile(lambda: done)
        batches = [
            _to_requested_schema(requested_schema=self.schema, file_schema=task.schema, batch=batch,
                                 downcast_ns_timestamp_to_us=self.downcast, include_field_ids=True, format_model=self.model)
            for batch in task.record_batches
        ]
        path = self.provider.new_data_location(data_file_name=task.generate_data_file_filename(self.model.file_extension()),
                                               partition_key=task.partition_key)
        out = self.io.new_output(path)
        writer = _ParquetWriter(out, self)
        try:
            writer.write(pa.Table.from_batches(batches))
        except BaseException:
            writer.__exit__(*sys.exc_info())  # closes what was opened, as pyiceberg's `with` does
            raise
        partition = task.partition_key.partition if task.partition_key else Record()

        def finish() -> DataFile:
            statistics = writer.close()
            return DataFile.from_args(
                content=DataFileContent.DATA,
                file_path=path,
                file_format=FileFormat.PARQUET,
                partition=partition,
                file_size_in_bytes=len(out),
                sort_order_id=None,
                spec_id=self.metadata.default_spec_id,
                equality_ids=None,
                key_metadata=None,
                **statistics.to_serialized_dict(),
            )

        return EncodedFile(finish)


@dataclass(frozen=True)
class EncodedFile:
    """A data file whose rows are encoded but not yet closed: `finish()` closes it (flushing the
    last bytes, for an object store waiting for the upload) and returns its `DataFile`."""

    finish: Callable[[], DataFile]


def _writes_parquet(metadata: TableMetadata) -> bool:
    fmt = metadata.properties.get(TableProperties.WRITE_FILE_FORMAT, TableProperties.WRITE_FILE_FORMAT_DEFAULT)
    return str(fmt).upper() == FileFormat.PARQUET.value


def parquet_options(schema: Schema, properties: Properties) -> dict[str, Any]:
    """pyiceberg's Parquet writer options for a table, with two set the way the table properties mean them.

    - `write.parquet.page-row-limit` (Iceberg: at most this many rows per page, default 20,000) is
      Arrow's `max_rows_per_page`. pyiceberg passes it as `write_batch_size`, the number of rows
      Arrow encodes per step, which is not a page limit and, at 20,000 rows of ~300-byte payloads,
      makes each step's buffers outgrow the CPU caches: 7 % more CPU per file than Arrow's own
      step of 1,024 rows (measured on 1M realistic events).
    - `icebergdo.write.parquet.dictionary-exclude` (comma-separated top-level columns; events
      tables: `id,payload,ts`) writes those columns without dictionary encoding. Values that are
      (nearly) all distinct never profit from a dictionary, yet the writer hashes every value of a
      column chunk until the dictionary outgrows `write.parquet.dict-size-bytes`: another 6-9 % of
      the CPU of writing events, and the files came out ~5 % smaller without.
    """
    options = _get_parquet_writer_kwargs(properties)
    options.pop("write_batch_size", None)
    options["max_rows_per_page"] = property_as_int(properties, TableProperties.PARQUET_PAGE_ROW_LIMIT, TableProperties.PARQUET_PAGE_ROW_LIMIT_DEFAULT)
    exclude = {c.strip() for c in properties.get(DICTIONARY_EXCLUDE_PROPERTY, "").split(",") if c.strip()}
    if exclude:
        options["use_dictionary"] = [path for field in schema.fields if field.name not in exclude for path in _leaf_paths(field.name, field.field_type)]
    return options


class _ParquetWriter(ParquetFormatWriter):
    """pyiceberg's Parquet writer with the options and statistics plan of a `DataFileWriter`."""

    def __init__(self, output_file: OutputFile, write: DataFileWriter) -> None:
        super().__init__(output_file, write.schema, write.metadata.properties)
        self._parquet_writer_kwargs = write.options
        self._write = write

    def close(self) -> DataFileStatistics:
        if self._result is not None:
            return self._result
        if self._writer is None or self._fos is None:
            raise ValueError("Cannot close a writer that was never written to")
        with self._fos:
            self._writer.close()
            self._result = data_file_statistics_from_parquet_metadata(
                parquet_metadata=self._writer.writer.metadata, stats_columns=self._write.stats, parquet_column_mapping=self._write.paths)
        return self._result


def _leaf_paths(path: str, field_type: Any) -> list[str]:
    """The Parquet column paths under one field, as Arrow names them (compliant nested types)."""
    if isinstance(field_type, StructType):
        return [p for f in field_type.fields for p in _leaf_paths(f"{path}.{f.name}", f.field_type)]
    if isinstance(field_type, ListType):
        return _leaf_paths(f"{path}.list.element", field_type.element_type)
    if isinstance(field_type, MapType):
        return _leaf_paths(f"{path}.key_value.key", field_type.key_type) + _leaf_paths(f"{path}.key_value.value", field_type.value_type)
    return [path]


@dataclass(frozen=True)
class _Workers:
    """What one process's data-file writes share (made again in a forked child: `_workers`)."""

    pid: int
    pool: ThreadPoolExecutor
    slots: threading.BoundedSemaphore


_shared: _Workers | None = None
_shared_lock = threading.Lock()


def _workers() -> _Workers:
    global _shared
    with _shared_lock:
        if _shared is None or _shared.pid != os.getpid():
            workers = ExecutorFactory.max_workers() or min(32, (os.cpu_count() or 1) + 4)
            _shared = _Workers(os.getpid(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="icebergdo-datafiles"),
                               threading.BoundedSemaphore(usable_cores()))
        return _shared


def _executor() -> ThreadPoolExecutor:
    """The threads that gather and write data files: as many as pyiceberg's own pool (its `max-workers`
    setting, else Python's default), which they hand the Parquet writing to. One pool per process."""
    return _workers().pool


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def encoding_slot() -> threading.BoundedSemaphore:
    """One of the process's data-file encoding slots, as many as usable cores.

    Gathering a file's rows and encoding them is CPU work, and each file in progress holds its
    gathered rows (~30 MB for 83k events). pyiceberg's pool has cores + 4 threads, sized for I/O:
    with every one of them gathering and encoding, six files' rows were held on two cores, the
    extra memory came fresh from the kernel each time (zeroed: `clear_page_erms` was 13 % of the
    process's samples), and 1M-event appends interleaved with other appends, as a service runs
    them, took a median 0.81 s (0.72-1.14); with the slots 0.54-0.60 s in two runs (0.49-0.78).
    The threads still wait for uploads in parallel: a slot is released when a file's rows are
    encoded, before it is closed.
    """
    return _workers().slots


class AlreadyCommitted(ValidationException):
    """The ledger already covers this batch: it landed before (refused by `LedgerGuard`)."""


class LedgerGuard(ValidatableTableRequirement):
    """A commit requirement: refuse the commit if writer `writer_id` already committed batch `seq`.

    Requirements are checked against the metadata the commit is applied to (the catalog's current
    one, right before its compare-and-swap), so the append and the ledger check are one atomic
    step: a batch can never land twice, even when an earlier attempt whose outcome was unknown
    lands late. It raises a `ValidationException`, which pyiceberg does not retry.
    """

    type: Literal["icebergdo-ledger-guard"] = Field(default="icebergdo-ledger-guard")
    writer_id: str
    seq: int

    def validate(self, base_metadata: TableMetadata | None) -> None:  # type: ignore[override]  # pydantic's deprecated classmethod
        if base_metadata is not None and ledger.is_committed(base_metadata.properties, self.writer_id, self.seq):
            raise AlreadyCommitted(f"batch {self.seq} of writer {self.writer_id} is already committed")


class _Transaction(Transaction):
    """pyiceberg's Transaction, computing its staged metadata once per change instead of per access.

    `Transaction.table_metadata` applies the staged updates to a deep copy of the whole metadata on
    every access, and a snapshot producer reads it ~15 times per commit: with a few hundred
    snapshots that deep copy was 80 % of a small commit (profiled). The metadata models are frozen,
    so the result is computed once per (base, updates) state, without the copy (`metadata.apply_updates`).
    """

    _memo: tuple[TableMetadata, tuple[Any, ...], TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        memo = self._memo
        if memo is not None and memo[0] is base and memo[1] is updates:
            return memo[2]
        value = apply_updates(base, updates)
        self._memo = (base, updates, value)
        return value


@dataclass
class PreparedAppend:
    """Data files written for one append and not committed yet, with what they were written against."""

    files: list[DataFile]
    schema_id: int
    spec_id: int
    rows: int


def write_append(table: Table, batch: pa.Table, sort_by: str | list[str] | None = None) -> PreparedAppend:
    """Write `batch` as data files of `table`, each in `sort_by` order (`write_rows`); commit nothing.

    This is the slow part of an append (Parquet encoding and uploads), so it runs before the
    commit lock is taken. Raises ValueError/TypeError when the batch does not fit the schema.
    """
    metadata = table.metadata
    check_schema(metadata, batch.schema)
    files = write_rows(metadata, table.io, batch, sort_by=sort_by, target_size=target_file_size(metadata.properties))
    return PreparedAppend(files, metadata.current_schema_id, metadata.default_spec_id, batch.num_rows)


def still_valid(metadata: TableMetadata, prepared: PreparedAppend) -> bool:
    """Can the prepared files be committed to a table whose metadata is now `metadata`?

    Files carry the field ids and partition values of the schema and spec they were written with:
    if either changed meanwhile (schema evolution by another writer, a new spec), write them again.
    """
    return metadata.current_schema_id == prepared.schema_id and metadata.default_spec_id == prepared.spec_id


def commit_append(
    table: Table,
    prepared: PreparedAppend,
    snapshot_properties: dict[str, str],
    *,
    set_properties: dict[str, str] | None = None,
    guard: LedgerGuard | None = None,
) -> Table:
    """One snapshot adding the prepared files (fast append, or merge append when the table asks for
    it), plus `set_properties` in the same metadata update. Returns the table as committed.

    Raises `AlreadyCommitted` when `guard` finds the batch in the ledger (nothing committed),
    CommitFailedException when it lost the race after pyiceberg's own retries. A REST catalog
    cannot take the guard (the server would refuse an unknown requirement): there the caller's
    ledger look-up before the commit is the only check.
    """
    tx = _Transaction(table, autocommit=False)
    if guard is not None and accepts_own_requirements(table.catalog):
        # Staged before our own ledger update, so this first check sees the base as loaded; the
        # catalog checks it again against the metadata it applies the commit to.
        tx._stage((), (guard,))  # type: ignore[arg-type]  # a requirement of our own
    if set_properties:
        tx.set_properties(set_properties)
    metadata = tx.table_metadata
    merge = property_as_bool(metadata.properties, TableProperties.MANIFEST_MERGE_ENABLED, TableProperties.MANIFEST_MERGE_ENABLED_DEFAULT)
    update = tx.update_snapshot(snapshot_properties=snapshot_properties)
    with (update.merge_append() if merge else update.fast_append()) as producer:
        for data_file in prepared.files:
            producer.append_data_file(data_file)
    return tx.commit_transaction()


def append(table: Table, batch: pa.Table, snapshot_properties: dict[str, str], sort_by: str | list[str] | None = None) -> None:
    """`table.append(batch)` in one commit: `write_append` then `commit_append`.

    Raises ValueError/TypeError when the batch does not fit the table's schema (nothing written).
    """
    commit_append(table, write_append(table, batch, sort_by), snapshot_properties)


def delete_files(io: FileIO, files: Iterable[DataFile]) -> None:
    """Best effort: remove data files known not to be referenced by any commit."""
    for f in files:
        try:
            io.delete(f.file_path)
        except Exception:  # noqa: BLE001 - an unremoved file is an orphan for `maintain --orphans`, not an error
            pass
