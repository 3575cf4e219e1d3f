"""Bin-pack compaction: merge a partition's small files into target-sized, sorted files.

Semantics follow Iceberg's `rewrite_data_files` (bin-pack): a file is small below 75 % of
`write.target-file-size-bytes`; a partition is rewritten when it has at least `min-input-files`
(5) small files. Outputs are written in the ADR layout with a `_compact-` prefix and committed
as one `replace` snapshot that removes exactly the input files. Partitions older than
`rollup_after` are merged whole (all files, from 2 up), so old data ends up one file per partition.

Inputs are each sorted by `ts` (the writer sorts every batch); they are merged, not re-sorted
from scratch (`merge.py`).

Tables with `icebergdo.dedupe` (see `dedupe.py`) lose their later copies of an event here: the
id and arrival columns of every file of a rewritten partition are read, the duplicates dropped
from the rewritten files, and a file outside the rewrite that holds a duplicate is rewritten as
well. Such a commit changes rows, so it is an `overwrite`, not a `replace`.

Concurrency: appends during compaction survive (their manifests are carried over on retry).
If another commit removed one of our inputs (a CDC rewrite, a retention delete) — or, when
deduplicating, any file of the partition whose ids decided what was dropped — the groups that
lost one are dropped (their outputs deleted) and the rest are committed.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Operation
from pyiceberg.transforms import (
    DayTransform,
    HourTransform,
    IdentityTransform,
    MonthTransform,
    YearTransform,
)
from pyiceberg.typedef import Record

from icebergdo.errors import ConfigError
from icebergdo.iceberg import datafiles, scan
from icebergdo.iceberg.producers import MetadataCachingTransaction, ReplaceDataFiles
from icebergdo.maintenance import dedupe, merge
from icebergdo.maintenance.common import (
    MIN_INPUT_FILES_DEFAULT,
    SMALL_FILE_RATIO,
    StepReport,
    table_name,
    target_file_size,
)
from icebergdo.store import Store

log = logging.getLogger(__name__)
COMPACT_PREFIX = dedupe.COMPACT_PREFIX
REMOVED_PROPERTY = "icebergdo.dedupe.removed"  # snapshot summary: later copies this compaction dropped
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_ATTEMPTS = 5


@dataclass
class Group:
    """The files of one partition that one output set replaces."""

    spec_id: int
    partition: Record
    files: list[DataFile]
    rollup: bool = False
    outputs: list[DataFile] = field(default_factory=list)
    partition_files: list[DataFile] = field(default_factory=list)  # every live file of the partition at planning
    drop: dict[str, pa.Array] = field(default_factory=dict)  # input path -> rows to drop (dedupe), in file order
    depends: list[DataFile] = field(default_factory=list)  # files whose ids decided `drop`: must still be live

    @property
    def dropped(self) -> int:
        return sum(int(pc.sum(m).as_py() or 0) for m in self.drop.values())

    @property
    def bytes(self) -> int:
        return sum(f.file_size_in_bytes for f in self.files)


def partition_end(spec: PartitionSpec, partition: Record) -> datetime | None:
    """When the partition's time range ends (first time-transform field), or None if not time-partitioned."""
    for pos, pf in enumerate(spec.fields):
        value = partition[pos]
        if value is None:
            continue
        if isinstance(pf.transform, HourTransform):
            return _EPOCH + timedelta(hours=int(value) + 1)
        if isinstance(pf.transform, DayTransform):
            days = value if isinstance(value, int) else (value - date(1970, 1, 1)).days
            return _EPOCH + timedelta(days=int(days) + 1)
        if isinstance(pf.transform, MonthTransform):
            y, m = divmod(int(value) + 1, 12)
            return datetime(1970 + y, m + 1, 1, tzinfo=UTC)
        if isinstance(pf.transform, YearTransform):
            return datetime(1970 + int(value) + 1, 1, 1, tzinfo=UTC)
    return None


def sort_columns(table: Table) -> list[str]:
    """The table's sort order (identity fields), else `ts` when the table has one."""
    schema = table.schema()
    cols = []
    for sf in table.sort_order().fields:
        if isinstance(sf.transform, IdentityTransform):
            cols.append(schema.find_column_name(sf.source_id))
    if not cols and "ts" in schema.column_names:
        cols = ["ts"]
    return [c for c in cols if c]


def plan_groups(
    table: Table,
    *,
    target_size: int,
    min_input_files: int = MIN_INPUT_FILES_DEFAULT,
    small_ratio: float = SMALL_FILE_RATIO,
    rollup_after: float | None = None,
    now: datetime | None = None,
) -> tuple[list[Group], list[str]]:
    """Which partitions to rewrite, from the current snapshot. Returns (groups, notes)."""
    notes: list[str] = []
    if table.current_snapshot() is None:
        return [], ["empty table"]
    now = now or datetime.now(UTC)
    by_partition: dict[tuple[int, Record], list[FileScanTask]] = defaultdict(list)
    for task in table.scan().plan_files():
        by_partition[(task.file.spec_id, task.file.partition)].append(task)
    specs = table.specs()
    default_spec = table.spec().spec_id
    small = int(target_size * small_ratio)
    groups: list[Group] = []
    skipped_deletes = skipped_spec = 0
    for (spec_id, partition), tasks in sorted(by_partition.items(), key=lambda kv: (kv[0][0], repr(kv[0][1]))):
        if any(t.delete_files for t in tasks):
            skipped_deletes += 1  # rewriting would have to apply deletes; leave to an engine that does
            continue
        if spec_id != default_spec:
            skipped_spec += 1
            continue
        end = partition_end(specs[spec_id], partition)
        rollup = rollup_after is not None and end is not None and end <= now - timedelta(seconds=rollup_after)
        # In order of their time lower bound, so a partition split into several outputs gets outputs
        # covering successive time ranges (readers prune by them) and each merge has fewer overlaps.
        everything = _by_lower_bound(table, [t.file for t in tasks], sort_columns(table))
        if rollup:
            if len(everything) >= 2:
                groups += [Group(spec_id, partition, b, rollup=True, partition_files=everything) for b in _bins(everything, target_size)]
            continue
        files = [f for f in everything if f.file_size_in_bytes < small]
        if len(files) >= max(2, min_input_files):
            groups += [Group(spec_id, partition, b, partition_files=everything) for b in _bins(files, target_size)]
    if skipped_deletes:
        notes.append(f"{skipped_deletes} partition(s) with delete files skipped")
    if skipped_spec:
        notes.append(f"{skipped_spec} partition(s) of an older partition spec skipped")
    return groups, notes


def _bins(files: list[DataFile], target_size: int) -> list[list[DataFile]]:
    """Split one partition's inputs into groups of about `target_size` bytes (bounded memory).

    Each group becomes one output file and one unit of conflict handling; a trailing group of a
    single file joins the previous one (rewriting one file alone gains nothing).
    """
    bins: list[list[DataFile]] = [[]]
    size = 0
    for f in files:  # in the caller's order
        if bins[-1] and size + f.file_size_in_bytes > target_size:
            bins.append([])
            size = 0
        bins[-1].append(f)
        size += f.file_size_in_bytes
    if len(bins) > 1 and len(bins[-1]) < 2:
        last = bins.pop()
        bins[-1].extend(last)
    return [b for b in bins if len(b) >= 2]


def _prepare_group(table: Table, group: Group, sort_by: list[str], timings: dict[str, float]) -> pa.Table:
    """The group's rows, read whole, without the later copies (dedupe), merged into sort order."""
    t0 = time.perf_counter()
    files = _by_lower_bound(table, group.files, sort_by)
    data = scan.read_files(table, files)
    t1 = time.perf_counter()
    expected = sum(f.record_count for f in group.files)
    if data.num_rows != expected:
        raise RuntimeError(f"read {data.num_rows} rows from {len(group.files)} files whose metadata says {expected}")
    if group.drop:  # dedupe: the later copies go (masks are in each file's row order, as read)
        masks = [group.drop.get(f.file_path) for f in files]
        drop = pa.concat_arrays([m if m is not None else pa.array([False] * f.record_count) for m, f in zip(masks, files, strict=True)])
        data = data.filter(pc.invert(drop))
    rows_order = datafiles.order(data, sort_by)  # the append path's ordering: a check, then one sort
    if rows_order is not None:
        data = merge.gather(data, rows_order)
    t2 = time.perf_counter()
    timings["read_s"] = timings.get("read_s", 0.0) + t1 - t0
    timings["sort_s"] = timings.get("sort_s", 0.0) + t2 - t1
    return data


def _write_group(table: Table, group: Group, data: pa.Table, target_size: int, timings: dict[str, float]) -> list[DataFile]:
    """Write the prepared rows of a group as ~target-sized outputs (one partition)."""
    t2 = time.perf_counter()
    n_out = max(1, math.ceil(group.bytes / target_size))
    per = math.ceil(data.num_rows / n_out) if data.num_rows else 0
    md = table.metadata
    spec = table.specs()[group.spec_id]
    # Every row of the group is in one partition: derive its key from one row, not all of them.
    key = datafiles.partition_key_of(spec, md.schema(), data) if data.num_rows else None
    if key is not None and key.partition != group.partition:
        raise RuntimeError(f"compaction input of partition {group.partition} maps to {key.partition}")
    chunks = [(key, data.slice(i * per, per)) for i in range(n_out)]
    outputs = datafiles.write_data_files(md, table.io, chunks, file_prefix=COMPACT_PREFIX)
    timings["write_s"] = timings.get("write_s", 0.0) + time.perf_counter() - t2
    if sum(f.record_count for f in outputs) != sum(f.record_count for f in group.files) - group.dropped:
        raise RuntimeError("compaction output row count does not match its input")
    return outputs


def _write_groups(table: Table, groups: list[Group], target_size: int, sort_by: list[str], timings: dict[str, float], progress: Callable[[str], None], name: str) -> None:
    """Write every group's outputs (`Group.outputs`), one group in memory at a time.

    (Reading the next group while one is written was measured on this 2-core machine under load:
    no faster, and twice the memory.)
    """
    for i, g in enumerate(groups, 1):
        data = _prepare_group(table, g, sort_by, timings)
        g.outputs = _write_group(table, g, data, target_size, timings)
        del data
        progress(f"{name}: compact group {i}/{len(groups)}: {len(g.files)} files → {len(g.outputs)}")


def _by_lower_bound(table: Table, files: list[DataFile], sort_by: list[str]) -> list[DataFile]:
    """Files ordered by their lower bound on the first sort column (from manifest stats).

    Stream-like appends cover successive time slices, so in this order their concatenation is
    usually sorted already and the (expensive) row shuffle can be skipped.
    """
    if not sort_by:
        return files
    field = table.schema().find_field(sort_by[0])

    def bound(f: DataFile) -> tuple[int, Any]:
        raw = (f.lower_bounds or {}).get(field.field_id)
        return (0, from_bytes(field.field_type, raw)) if raw is not None else (1, 0)  # type: ignore[arg-type]  # sort columns are primitive

    try:
        return sorted(files, key=bound)
    except TypeError:  # incomparable bounds: keep the order
        return files


def _live_paths(table: Table) -> set[str]:
    return {t.file.file_path for t in table.scan().plan_files()}


def compact(
    table: Table,
    *,
    store: Store,
    dry_run: bool = False,
    target_size: int | None = None,
    min_input_files: int = MIN_INPUT_FILES_DEFAULT,
    rollup_after: float | None = None,
    progress: Callable[[str], None] = lambda _m: None,
    reload: Callable[[], Table] | None = None,
) -> StepReport:
    """Compact `table`; `reload` returns a fresh Table (used to re-validate after a conflict)."""
    started = time.monotonic()
    name = table_name(table)
    target = target_size or target_file_size(table)
    groups, notes = plan_groups(table, target_size=target, min_input_files=min_input_files, rollup_after=rollup_after)
    report = StepReport(name, "compact", dry_run, notes=notes)
    try:
        spec = dedupe.spec_of(table)
    except ConfigError as e:  # compacting without the dedupe the table asks for would hide the mistake
        report.notes.append(f"refused: {e}")
        report.seconds = time.monotonic() - started
        return report
    if spec is not None and groups and not dry_run:
        started_dedupe = time.monotonic()
        groups += plan_dedupe(table, spec, groups)
        report.details["duplicates_removed"] = sum(g.dropped for g in groups)
        report.details["dedupe_s"] = time.monotonic() - started_dedupe
    report.files_in = sum(len(g.files) for g in groups)
    report.bytes_in = sum(g.bytes for g in groups)
    report.details["groups"] = len(groups)
    report.details["rollup_groups"] = sum(1 for g in groups if g.rollup)
    if dry_run or not groups:
        report.files_out = sum(max(1, math.ceil(g.bytes / target)) for g in groups)
        report.seconds = time.monotonic() - started
        return report
    sort_by = sort_columns(table)
    timings: dict[str, float] = {"plan_s": time.monotonic() - started}
    report.details["timings"] = timings
    try:
        _write_groups(table, groups, target, sort_by, timings, progress, name)
    except BaseException:
        for g in groups:  # nothing was committed: the outputs written so far are ours to remove
            store.delete(f.file_path for f in g.outputs)
        raise
    aborted: list[Group] = []
    committed = False
    commit_started = time.monotonic()
    # Outputs are deleted only when the commit is known not to have landed (a conflict); on any
    # other error the outcome is unknown and they are left for orphan removal.
    for _attempt in range(MAX_ATTEMPTS):
        if not groups:
            break
        try:
            tx = MetadataCachingTransaction(table)
            dropped = sum(g.dropped for g in groups)
            props = {"icebergdo.maintenance": "compact"}
            if dropped:
                props[REMOVED_PROPERTY] = str(dropped)
            producer = ReplaceDataFiles(
                operation=Operation.OVERWRITE if dropped else Operation.REPLACE,
                transaction=tx,
                io=table.io,
                snapshot_properties=props,
            )
            for g in groups:
                for f in g.files:
                    producer.delete_data_file(f)
                for f in g.outputs:
                    producer.append_data_file(f)
                for f in g.depends:
                    producer.require_data_file(f)
            producer.commit()
            table = tx.commit_transaction()
            committed = True
            break
        except Exception as e:
            if not _is_conflict(e):
                raise
            log.info("%s: compaction conflicted (%s); re-validating inputs", name, e)
            table = reload() if reload else table.refresh()
            live = _live_paths(table)
            keep = [g for g in groups if all(f.file_path in live for f in (*g.files, *g.depends))]
            kept = {id(g) for g in keep}
            for g in groups:
                if id(g) not in kept:
                    aborted.append(g)
                    store.delete(f.file_path for f in g.outputs)
                    progress(f"{name}: group {g.partition} aborted: an input file was removed concurrently")
            groups = keep
    if groups and not committed:
        for g in groups:
            store.delete(f.file_path for f in g.outputs)
        raise CommitFailedException(f"{name}: compaction could not commit after {MAX_ATTEMPTS} attempts")
    timings["commit_s"] = time.monotonic() - commit_started
    if committed:
        snap = table.current_snapshot()
        report.snapshot_id = snap.snapshot_id if snap else None
    report.files_in = sum(len(g.files) for g in groups)
    report.bytes_in = sum(g.bytes for g in groups)
    report.files_out = sum(len(g.outputs) for g in groups)
    report.bytes_out = sum(f.file_size_in_bytes for g in groups for f in g.outputs)
    report.details["groups"] = len(groups)
    report.details["aborted_groups"] = len(aborted)
    if spec is not None:
        report.details["duplicates_removed"] = sum(g.dropped for g in groups)
    if aborted:
        report.notes.append(f"{len(aborted)} group(s) aborted: inputs changed concurrently")
    report.seconds = time.monotonic() - started
    return report


def plan_dedupe(table: Table, spec: dedupe.DedupeSpec, groups: list[Group]) -> list[Group]:
    """Mark the later copies of an id in every partition being rewritten (`Group.drop`).

    The id and arrival columns of *all* live files of the partition are read, so copies in files
    that are not being rewritten count too; such a file that holds a copy to drop becomes a group
    of its own (returned). Every group records the partition's other files as `depends`.
    """
    extra: list[Group] = []
    by_partition: dict[tuple[int, Record], list[Group]] = defaultdict(list)
    for g in groups:
        by_partition[(g.spec_id, g.partition)].append(g)
    for (spec_id, partition), gs in by_partition.items():
        files = sorted(gs[0].partition_files, key=lambda f: f.file_path)
        keys = scan.read_files(table, files, columns=[spec.column, spec.arrival])
        counts = [f.record_count for f in files]
        if keys.num_rows != sum(counts):
            raise RuntimeError(f"read {keys.num_rows} ids from {len(files)} files whose metadata says {sum(counts)}")
        order = pa.array([dedupe.file_order(f.file_path) for f in files for _ in range(f.record_count)], pa.string())
        rows = pa.array([i for n in counts for i in range(n)], pa.int64())
        drop = dedupe.duplicates(keys.column(spec.column), keys.column(spec.arrival), order, rows, spec.window_us)
        masks: dict[str, pa.Array] = {}
        offset = 0
        for f, n in zip(files, counts, strict=True):
            mask = drop.slice(offset, n)
            offset += n
            if pc.any(mask).as_py():
                masks[f.file_path] = mask
        inputs = {f.file_path for g in gs for f in g.files}
        for path in masks.keys() - inputs:  # a copy to drop in a file compaction would not rewrite
            (f,) = [f for f in files if f.file_path == path]
            extra.append(Group(spec_id, partition, [f], partition_files=gs[0].partition_files))
        for g in [*gs, *[e for e in extra if (e.spec_id, e.partition) == (spec_id, partition)]]:
            mine = {f.file_path for f in g.files}
            g.drop = {p: m for p, m in masks.items() if p in mine}
            g.depends = [f for f in files if f.file_path not in mine]
    return extra


def _is_conflict(e: Exception) -> bool:
    from pyiceberg.exceptions import ValidationException

    return isinstance(e, (CommitFailedException, ValidationException))
