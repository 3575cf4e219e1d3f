"""The copy-on-write fold engine: change-log rows into the current-state table, one commit per fold.

Each `apply` commits the log first, then folds every log snapshot not yet folded into the state in
ONE copy-on-write commit that replaces exactly the data files holding affected keys (bucket
partition, then key bounds, narrow the candidates). The state table property
`icebergdo.cdc.folded-log-snapshot-id`, set in the same commit, says how far the log has been
folded, so a fold lost to a crash is redone by the next `apply` or by `repair()`. The fold rule
(`fold.py`) is idempotent, so redoing a fold, or two processes folding the same changes, is
harmless; a commit whose view of the state went stale fails pyiceberg's serializable validation and
is recomputed (up to `FOLD_ATTEMPTS` times).
"""

from __future__ import annotations

import logging
import random
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import (
    And,
)
from pyiceberg.partitioning import (
    PartitionFieldValue,
    PartitionKey,
)
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of
from pyiceberg.transforms import BucketTransform

from icebergdo.cdc.changes import (
    LOG_META,
    VERSION_COLS,
)
from icebergdo.cdc.design import (
    FOLD_ATTEMPTS,
    P_CHANGES,
    P_FOLDED,
    arrow_schema,
    conform,
    evolve,
    small_type,
)
from icebergdo.cdc.fold import Merge, arange, drop_tombstoned, merge, winners
from icebergdo.errors import (
    StorageError,
)
from icebergdo.iceberg import datafiles, filters, scan
from icebergdo.schema import TS

log = logging.getLogger(__name__)


@dataclass
class ApplyResult:
    """What one `apply`/`repair` did."""

    changes: int = 0
    log_snapshot_id: int | None = None
    state_snapshot_id: int | None = None
    folded: int = 0  # log rows folded into the state by this call (may include a crashed earlier apply)
    files_rewritten: int = 0
    files_added: int = 0
    rows_written: int = 0
    attempts: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class FoldEngine:
    """The part of a `Collection` that writes its state table (mixed into `Collection`)."""

    state: Table | None
    log: Table | None
    key: list[str]
    state_name: str

    def _refresh(self) -> None:
        raise NotImplementedError

    def _folded_to(self) -> int | None:
        assert self.state is not None
        value = self.state.properties.get(P_FOLDED)
        return int(value) if value else None

    def _pending(self, folded: int | None, head: Any, hint: tuple[int, pa.Table] | None) -> pa.Table:
        """The log rows not yet folded: our own batch when nothing else happened in between."""
        assert self.log is not None
        if hint is not None and hint[0] == head.snapshot_id and head.parent_snapshot_id == folded:
            return hint[1]
        if folded is not None and any(s.snapshot_id == folded for s in ancestors_of(head, self.log.metadata)):
            scan = self.log.incremental_append_scan(from_snapshot_id_exclusive=folded, to_snapshot_id_inclusive=head.snapshot_id)
            return scan.to_arrow()
        # Never folded, or the folded snapshot expired: refold the whole log (idempotent).
        return self.log.scan(snapshot_id=head.snapshot_id).to_arrow()

    def _fold(self, hint: tuple[int, pa.Table] | None) -> ApplyResult:
        delay = 0.05
        for attempt in range(1, FOLD_ATTEMPTS + 1):
            self._refresh()
            assert self.state is not None and self.log is not None
            head = self.log.current_snapshot()
            cur = self.state.current_snapshot()
            base = ApplyResult(attempts=attempt, state_snapshot_id=cur.snapshot_id if cur else None)
            if head is None:
                return base
            folded = self._folded_to()
            if folded == head.snapshot_id:
                return base
            t0 = time.perf_counter()
            try:
                pending = self._pending(folded, head, hint)
                read_log = time.perf_counter() - t0
                result = self._fold_once(pending, head.snapshot_id)
            except (CommitFailedException, ValidationException, FileNotFoundError) as e:
                # FileNotFoundError: a snapshot we loaded was expired (its manifest list deleted) by a
                # concurrent maintenance run before we read it; nothing was committed, so start again.
                if isinstance(e, FileNotFoundError) and attempt == FOLD_ATTEMPTS:
                    raise
                log.info("%s: fold conflicted with a concurrent commit (%s); recomputing", self.state_name, e)
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)
                continue
            result.attempts = attempt
            result.seconds["read_log"] = read_log
            return result
        raise StorageError(f"{self.state_name}: could not fold the change log after {FOLD_ATTEMPTS} attempts (too many concurrent writers)")

    def _fold_once(self, pending: pa.Table, target: int) -> ApplyResult:
        """One copy-on-write commit of `pending` (log rows) into the state; raises on a conflicting commit."""
        assert self.state is not None and self.log is not None
        t0 = time.perf_counter()
        pending = conform(pending, pa.schema([f.with_type(small_type(f.type)) for f in pending.schema]))
        self.state = evolve(self.state, [f for f in pending.schema if f.name not in LOG_META.names])
        state = self.state
        target_schema = arrow_schema(state.schema())
        won = winners(pending)
        tasks = self._affected_tasks(won)
        existing, counts = self._read(tasks)
        t1 = time.perf_counter()
        if existing.num_rows:
            m = merge(existing, won, self.key)
        else:
            puts = won.filter(pc.not_equal(won.column("_op"), "delete"))
            m = Merge(replaced_rows=pa.array([], pa.int64()), accepted=puts, new_keys=pa.repeat(pa.scalar(True), puts.num_rows))
        accepted = drop_tombstoned(m.accepted, m.new_keys, self._logged_deletes(m.accepted.filter(m.new_keys)))
        # Files to rewrite: those holding a replaced (updated or deleted) row; rows are in task order.
        ends = list(accumulate(counts))
        rewrite_idx = sorted({bisect_right(ends, r) for r in m.replaced_rows.to_pylist()})
        keep = pc.invert(pc.is_in(arange(existing.num_rows), value_set=m.replaced_rows)) if rewrite_idx else pa.array([], pa.bool_())
        groups = _PartitionGroups(state)
        for i in rewrite_idx:
            start = ends[i] - counts[i]
            groups.add_file(tasks[i].file, existing.slice(start, counts[i]).filter(keep.slice(start, counts[i])))
        groups.add_rows(conform(accepted, target_schema).sort_by([(k, "ascending") for k in self.key]))
        t2 = time.perf_counter()
        rewrite = [tasks[i].file for i in rewrite_idx]
        result = ApplyResult(folded=pending.num_rows, files_rewritten=len(rewrite), rows_written=groups.rows)
        summary = {P_FOLDED: str(target), P_CHANGES: str(pending.num_rows)}
        written: list[str] = []
        t3 = t2
        try:
            tx = state.transaction()
            tx.set_properties({P_FOLDED: str(target)})
            if rewrite or groups.rows:
                with tx.update_snapshot(snapshot_properties=summary).overwrite() as ow:
                    for f in rewrite:
                        ow.delete_data_file(f)
                    for df in groups.write(tx.table_metadata):
                        written.append(df.file_path)
                        ow.append_data_file(df)
            t3 = time.perf_counter()
            _commit_state(tx)
        except (CommitFailedException, ValidationException, FileNotFoundError):
            for path in written:  # never committed: remove our files so no orphans are left behind
                try:
                    state.io.delete(path)
                except Exception:  # noqa: BLE001 - best effort
                    log.warning("could not delete uncommitted %s", path)
            raise
        snap = state.current_snapshot()
        result.state_snapshot_id = snap.snapshot_id if snap else None
        result.files_added = len(written)
        result.seconds = {"read_state": t1 - t0, "merge": t2 - t1, "write": t3 - t2, "commit": time.perf_counter() - t3}
        return result

    def _affected_tasks(self, won: pa.Table) -> list[Any]:
        """State files that may hold a key of `won`: bucket partition, then key-column bounds."""
        assert self.state is not None
        state = self.state
        snap = state.current_snapshot()
        if snap is None or won.num_rows == 0:
            return []
        tasks = list(state.scan(snapshot_id=snap.snapshot_id).plan_files())
        if not tasks:
            return []
        spec = state.spec()
        schema = state.schema()
        k0 = schema.find_field(self.key[0])
        keys = pc.unique(won.column(self.key[0]))
        bucket_pos = next(
            (i for i, pf in enumerate(spec.fields) if pf.source_id == k0.field_id and isinstance(pf.transform, BucketTransform)), None
        )
        by_bucket: dict[int, list[Any]] = {}
        if bucket_pos is not None:
            transform = spec.fields[bucket_pos].transform
            buckets = transform.pyarrow_transform(k0.field_type)(keys)
            for b, k in zip(buckets.to_pylist(), keys.to_pylist(), strict=True):
                by_bucket.setdefault(b, []).append(k)
            for v in by_bucket.values():
                v.sort()
        all_keys = sorted(keys.to_pylist())
        out = []
        for t in tasks:
            f = t.file
            cand = all_keys
            if bucket_pos is not None and f.spec_id == spec.spec_id:
                cand = by_bucket.get(f.partition[bucket_pos], [])
            if not cand:
                continue
            lo_b, hi_b = (f.lower_bounds or {}).get(k0.field_id), (f.upper_bounds or {}).get(k0.field_id)
            lo = from_bytes(k0.field_type, lo_b) if lo_b is not None else None  # type: ignore[arg-type]  # keys are primitive
            hi = from_bytes(k0.field_type, hi_b) if hi_b is not None else None  # type: ignore[arg-type]
            start = bisect_left(cand, lo) if lo is not None else 0
            stop = bisect_right(cand, hi) if hi is not None else len(cand)
            if stop > start:
                out.append(t)
        return out

    def _read(self, tasks: list[Any]) -> tuple[pa.Table, list[int]]:
        """Full rows of `tasks`, in task order, and the row count of each task."""
        assert self.state is not None
        target = arrow_schema(self.state.schema())
        if not tasks:
            return target.empty_table(), []
        counts = [t.file.record_count for t in tasks]
        table = scan.read_tasks(self.state, tasks) if not any(t.delete_files for t in tasks) else None
        if table is None or table.num_rows != sum(counts):  # delete files from another writer: read file by file
            parts = [conform(scan.read_tasks(self.state, [t]), target) for t in tasks]
            counts = [p.num_rows for p in parts]
            return pa.concat_tables(parts), counts
        return conform(table, target), counts

    def _logged_deletes(self, candidates: pa.Table) -> pa.Table:
        """Delete changes in the log for keys of `candidates` at or after their earliest `_ts`."""
        assert self.log is not None
        empty = pa.table({"_key": pa.array([], pa.string()), "_ts": pa.array([], TS), "_seq": pa.array([], pa.int64()), "_id": pa.array([], pa.string())})
        if candidates.num_rows == 0:
            return empty
        since = pc.min(candidates.column("_ts")).value
        filt = And(filters.eq("_op", "delete"), filters.ge("_ts", since))
        found = self.log.scan(row_filter=filt, selected_fields=("_key", *VERSION_COLS)).to_arrow()
        if found.num_rows == 0:
            return empty
        found = conform(found, empty.schema)
        return found.filter(pc.is_in(found.column("_key"), value_set=candidates.column("_key")))


class _PartitionGroups:
    """Rows to write, grouped by state partition: a rewritten file's survivors keep its partition
    (no re-bucketing of the bulk), new rows are partitioned by pyiceberg's transforms."""

    def __init__(self, table: Table) -> None:
        self.spec = table.spec()
        self.schema = table.schema()
        self._io = table.io
        self.groups: dict[tuple[Any, ...], tuple[PartitionKey, list[pa.Table]]] = {}
        self.rows = 0

    def _add(self, pk: PartitionKey, rows: pa.Table) -> None:
        if rows.num_rows:
            rec = pk.partition
            self.groups.setdefault(tuple(rec[i] for i in range(len(rec))), (pk, []))[1].append(rows)
            self.rows += rows.num_rows

    def add_file(self, f: Any, rows: pa.Table) -> None:
        if f.spec_id != self.spec.spec_id:
            return self.add_rows(rows)
        values = [PartitionFieldValue(pf, f.partition[i]) for i, pf in enumerate(self.spec.fields)]
        self._add(PartitionKey(field_values=values, partition_spec=self.spec, schema=self.schema), rows)

    def add_rows(self, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        if self.spec.is_unpartitioned():
            self._add(PartitionKey(field_values=[], partition_spec=self.spec, schema=self.schema), rows)
            return
        for key, part in datafiles.partitions(self.spec, self.schema, rows):
            assert key is not None
            self._add(key, part)

    def write(self, meta: Any) -> list[Any]:
        """One data file per partition (split at the table's target file size), written in parallel."""
        parts = [(pk, pa.concat_tables(rows)) for pk, rows in self.groups.values()]
        return datafiles.write_data_files(meta, self._io, parts, target_size=datafiles.target_file_size(meta.properties))


def _commit_state(tx: Any) -> None:
    """The state commit (a seam so tests can inject a crash between the log and state commits)."""
    tx.commit_transaction()

