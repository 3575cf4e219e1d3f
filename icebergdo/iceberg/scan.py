"""Reading chosen data files of a table into Arrow, through pyiceberg's own reader (deletes applied)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table


def read_tasks(table: Table, tasks: Sequence[FileScanTask]) -> pa.Table:
    """Every row of the given scan tasks (the table's current schema), in task order."""
    scan = ArrowScan(table.metadata, table.io, projected_schema=table.schema(), row_filter=AlwaysTrue())
    return scan.to_table(list(tasks))


def read_files(table: Table, files: Sequence[DataFile], columns: Sequence[str] | None = None) -> pa.Table:
    """Every row of the given data files (no delete files applied), in the given order; all columns or `columns`."""
    if columns is None:
        return read_tasks(table, [FileScanTask(f) for f in files])
    schema = table.schema().select(*columns)
    return ArrowScan(table.metadata, table.io, projected_schema=schema, row_filter=AlwaysTrue()).to_table([FileScanTask(f) for f in files])
