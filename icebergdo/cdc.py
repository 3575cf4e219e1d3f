"""CDC collections: an append-only change log and a current-state table, both Iceberg.

    {namespace}.{name}__deltas   the log: `_id, _op, _key, _ts, _seq` + the row after the change,
                                 partitioned by day(_ts) → {warehouse}/{ns}/{name}/deltas/YYYY/MM/DD/
    {namespace}.{name}           the current state: one row per live key + its version `_ts, _seq, _id`,
                                 partitioned by bucket(N, key) → {warehouse}/{ns}/{name}/data/

The log is the source of truth. Each `apply` commits the log first, then folds every log
snapshot not yet folded into the state in ONE copy-on-write commit that replaces exactly the
data files holding affected keys. The state table property `icebergdo.cdc.folded-log-snapshot-id`
says how far the log has been folded, so a fold lost to a crash is redone by the next `apply`
or by `repair()`. The fold rule (greatest version wins, see `cdc_fold`) is idempotent, so
redoing a fold, or two processes folding the same changes, is harmless; a commit whose view of
the state went stale fails pyiceberg's serializable validation and is recomputed.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate, count
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, ValidationException
from pyiceberg.expressions import AlwaysTrue, And, EqualTo, GreaterThanOrEqual, LessThan, LessThanOrEqual
from pyiceberg.io.pyarrow import ArrowScan, _determine_partitions, bin_pack_arrow_table, pyarrow_to_schema, schema_to_pyarrow, write_file
from pyiceberg.partitioning import PartitionField, PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.schema import Schema, assign_fresh_schema_ids
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform
from pyiceberg.utils.properties import property_as_int

from icebergdo import layout
from icebergdo.cdc_fold import (
    LOG_META,
    RESERVED,
    VERSION_COLS,
    Merge,
    arange,
    batch_from_arrow,
    build_batch,
    drop_tombstoned,
    merge,
    parse_changes,
    winners,
)
from icebergdo.errors import BadInputError, BadNameError, IcebergdoError, StorageError
from icebergdo.schema import TS, parse_ts

if TYPE_CHECKING:
    from icebergdo.lakehouse import Lakehouse

log = logging.getLogger(__name__)

P_ROLE = "icebergdo.cdc.role"
P_KEY = "icebergdo.cdc.key"
P_BUCKETS = "icebergdo.cdc.buckets"
P_FOLDED = "icebergdo.cdc.folded-log-snapshot-id"
P_CHANGES = "icebergdo.cdc.changes"
LOG_SUFFIX = "__deltas"
DEFAULT_KEY = ("id",)
DEFAULT_BUCKETS = 16
FOLD_ATTEMPTS = 30
TAG_PREFIX = "snapshot-"
# Copy-on-write and serializable validation: a concurrent fold that added or replaced files
# makes ours fail validation (and be recomputed) instead of duplicating a key.
STATE_PROPERTIES = {
    "write.delete.mode": "copy-on-write",
    "write.update.mode": "copy-on-write",
    "write.merge.mode": "copy-on-write",
    "write.delete.isolation-level": "serializable",
    "write.update.isolation-level": "serializable",
}
CDC_EVENT_TYPES = {f"{p}.{op}": op for p in ("cdc", "collection") for op in ("insert", "update", "delete")}


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


# -- arrow schema helpers ------------------------------------------------------------------------
def _small(t: pa.DataType) -> pa.DataType:
    """pyiceberg reads large_* types; folds join and compare, so use one flavour everywhere."""
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return pa.list_(_small(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_small(f.type)) for f in t])
    if pa.types.is_map(t):
        return pa.map_(_small(t.key_type), _small(t.item_type))
    return t


def arrow_schema(schema: Schema) -> pa.Schema:
    s = schema_to_pyarrow(schema, include_field_ids=False)
    return pa.schema([f.with_type(_small(f.type)) for f in s])


def conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """Select/cast `table`'s columns into `target` (missing columns become nulls)."""
    cols = []
    for f in target:
        if f.name in table.column_names:
            col = table.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=target)


def _fresh(pa_schema: pa.Schema, identifier: Sequence[str] = ()) -> Schema:
    from pyiceberg.catalog import Catalog

    converted = assign_fresh_schema_ids(Catalog._convert_schema_if_needed(pa_schema))
    ids = [converted.find_field(k).field_id for k in identifier]
    return Schema(*converted.fields, identifier_field_ids=ids)


def _micros(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _ms(ts: datetime) -> int:
    return _micros(ts) // 1000


class Collection:
    """One CDC collection. Get it with `lh.collection(namespace, name, key=["id"])`."""

    def __init__(self, lh: Lakehouse, namespace: str, name: str, key: Sequence[str], buckets: int) -> None:
        self.lh = lh
        self.namespace = namespace
        self.name = name
        self.key = list(key)
        self.buckets = buckets
        self.state_name = f"{namespace}.{name}"
        self.log_name = f"{namespace}.{name}{LOG_SUFFIX}"
        self.state: Table | None = None
        self.log: Table | None = None

    def __repr__(self) -> str:
        return f"Collection({self.state_name!r}, key={self.key})"

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        lh: Lakehouse,
        namespace: str,
        name: str,
        key: Sequence[str] | str | None = None,
        schema: pa.Schema | Schema | None = None,
        *,
        buckets: int | None = None,
    ) -> Collection:
        """Open a collection, or prepare a new one (its tables are created from `schema` now, or at the first apply)."""
        layout.validate_name(namespace, "namespace")
        layout.validate_name(name, "collection")
        if namespace in layout.RESERVED_NAMESPACES:
            raise BadNameError(f"namespace {namespace!r} is reserved ({', '.join(sorted(layout.RESERVED_NAMESPACES))})")
        if name.endswith(LOG_SUFFIX) or len(name) > 128 - len(LOG_SUFFIX):
            raise BadNameError(f"invalid collection {name!r}: must not end in {LOG_SUFFIX!r}, at most {128 - len(LOG_SUFFIX)} chars")
        if isinstance(key, str):
            key = [key]
        given = list(key) if key is not None else None
        state, logt = _load(lh, f"{namespace}.{name}"), _load(lh, f"{namespace}.{name}{LOG_SUFFIX}")
        existing = state or logt
        if existing is not None:
            if existing.properties.get(P_ROLE) not in ("state", "log"):
                raise IcebergdoError(f"table {namespace}.{name} exists but is not a CDC collection")
            stored = json.loads(existing.properties[P_KEY])
            if given is not None and given != stored:
                raise BadInputError(f"collection {namespace}.{name} has key {stored}, not {given}")
            given = stored
            buckets = int(existing.properties.get(P_BUCKETS, buckets or DEFAULT_BUCKETS))
        keys = given or list(DEFAULT_KEY)
        if not keys or len(set(keys)) != len(keys):
            raise BadInputError(f"invalid key {keys!r}: give one or more distinct field names")
        for k in keys:
            if not isinstance(k, str) or not k or "." in k or k in RESERVED:
                raise BadInputError(f"invalid key field {k!r}")
        n = buckets or DEFAULT_BUCKETS
        if not isinstance(n, int) or n < 1:
            raise BadInputError(f"buckets must be a positive integer, got {n!r}")
        coll = cls(lh, namespace, name, keys, n)
        coll.state, coll.log = state, logt
        if schema is not None or (existing is not None and (state is None or logt is None)):
            coll._ensure_tables(_row_schema(schema, keys) if schema is not None else None)
        return coll

    @property
    def exists(self) -> bool:
        return self.state is not None

    def _refresh(self) -> None:
        if self.state is None or self.log is None:
            self.state = _load(self.lh, self.state_name)
            self.log = _load(self.lh, self.log_name)
        else:
            self.state.refresh()
            self.log.refresh()

    def _ensure_tables(self, rows: pa.Schema | None) -> None:
        """Create whichever table is missing, from `rows` (key + row columns) or the other table."""
        self._refresh()
        if self.state is not None and self.log is not None:
            return
        if rows is None:
            other = self.state or self.log
            if other is None:
                raise IcebergdoError(f"collection {self.state_name} has no schema yet")
            rows = pa.schema([f for f in arrow_schema(other.schema()) if f.name not in RESERVED])
        for k in self.key:
            if k not in rows.names:
                raise BadInputError(f"schema of {self.state_name} lacks key field {k!r}")
        props = {P_KEY: json.dumps(self.key), P_BUCKETS: str(self.buckets)}
        key_fields = [rows.field(k).with_nullable(False) for k in self.key]
        others = [f.with_nullable(True) for f in rows if f.name not in self.key]
        if self.log is None:
            schema = _fresh(pa.schema([*LOG_META, *key_fields, *others]))
            ts_id = schema.find_field("_ts").field_id
            self.log = self.lh.create_table(
                self.log_name,
                schema,
                data_path=layout.collection_data_path(self.namespace, self.name, "deltas"),
                partition_spec=PartitionSpec(PartitionField(source_id=ts_id, field_id=1000, transform=DayTransform(), name="_ts_day")),
                sort_order=SortOrder(SortField(source_id=ts_id, transform=IdentityTransform())),
                properties={**props, P_ROLE: "log"},
            )
        if self.state is None:
            version = [LOG_META.field(c) for c in VERSION_COLS]
            schema = _fresh(pa.schema([*key_fields, *others, *version]), identifier=self.key)
            k0 = schema.find_field(self.key[0]).field_id
            self.state = self.lh.create_table(
                self.state_name,
                schema,
                data_path=layout.collection_data_path(self.namespace, self.name, "data"),
                partition_spec=PartitionSpec(
                    PartitionField(source_id=k0, field_id=1000, transform=BucketTransform(self.buckets), name=f"{self.key[0]}_bucket")
                ),
                sort_order=SortOrder(*[SortField(source_id=schema.find_field(k).field_id, transform=IdentityTransform()) for k in self.key]),
                properties={**props, **STATE_PROPERTIES, P_ROLE: "state"},
            )

    def _known_types(self) -> dict[str, pa.DataType]:
        out: dict[str, pa.DataType] = {}
        for t in (self.log, self.state):
            if t is not None:
                for f in arrow_schema(t.schema()):
                    if f.name not in RESERVED:
                        out[f.name] = f.type
        return out

    # -- writing ---------------------------------------------------------------------------------
    def apply(self, changes: Iterable[Any], *, labels: Sequence[str] | None = None, _ids: Sequence[str] | None = None) -> ApplyResult:
        """Append `changes` to the log, then fold the log into the current state.

        Each change is `{"op": "insert"|"update"|"delete", "ts": ..., "seq": ..., <row>}` or
        `{"op", "ts", "seq", "row": {...}}` (docs/cdc.md). Bad input raises `BadInputError`
        and changes neither table.
        """
        t0 = time.perf_counter()
        if isinstance(changes, pa.RecordBatch):
            changes = pa.Table.from_batches([changes])
        if isinstance(changes, pa.Table):
            parsed: Any = changes

            def build(known: Mapping[str, pa.DataType], ids: Sequence[str] | None) -> pa.Table:
                return batch_from_arrow(changes, self.key, known, ids)
        else:
            parsed = parse_changes(changes, self.key, labels=labels)

            def build(known: Mapping[str, pa.DataType], ids: Sequence[str] | None) -> pa.Table:
                return build_batch(parsed, self.key, known, ids)
        if not len(parsed):
            return self.repair()
        self._refresh()
        batch = build(self._known_types(), _ids)
        if self.state is None or self.log is None:
            self._ensure_tables(pa.schema([f for f in batch.schema if f.name not in RESERVED]))
            batch = build(self._known_types(), batch.column("_id").to_pylist())
        t1 = time.perf_counter()
        log_snapshot = self._append_log(batch)
        t2 = time.perf_counter()
        result = self._fold(hint=(log_snapshot, batch))
        result.changes = batch.num_rows
        result.log_snapshot_id = log_snapshot
        result.seconds = {"validate": t1 - t0, "log": t2 - t1, "fold": time.perf_counter() - t2, **result.seconds}
        return result

    def repair(self) -> ApplyResult:
        """Fold whatever part of the log the state has not folded yet (e.g. after a crash)."""
        if self.state is None and self.log is None:
            self._refresh()
            if self.state is None and self.log is None:
                return ApplyResult()
        self._ensure_tables(None)
        return self._fold(hint=None)

    def _append_log(self, batch: pa.Table) -> int:
        assert self.log is not None
        rows = [f for f in batch.schema if f.name not in LOG_META.names]
        self.log = _evolve(self.log, rows)
        data = conform(batch.sort_by([("_ts", "ascending")]), arrow_schema(self.log.schema()))
        try:
            self.log.append(data, snapshot_properties={P_CHANGES: str(batch.num_rows)})
        except (ValueError, TypeError) as e:
            raise BadInputError(f"{self.log_name}: batch does not fit the log schema: {e}") from None
        snap = self.log.current_snapshot()
        assert snap is not None
        return snap.snapshot_id

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
            pending = self._pending(folded, head, hint)
            read_log = time.perf_counter() - t0
            try:
                result = self._fold_once(pending, head.snapshot_id)
            except (CommitFailedException, ValidationException) as e:
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
        pending = conform(pending, pa.schema([f.with_type(_small(f.type)) for f in pending.schema]))
        self.state = _evolve(self.state, [f for f in pending.schema if f.name not in LOG_META.names])
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
        keep = pc.invert(pc.is_in(arange(existing.num_rows), value_set=m.replaced_rows)) if rewrite_idx else None
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
                    for df in groups.write(tx.table_metadata, target_schema):
                        written.append(df.file_path)
                        ow.append_data_file(df)
            t3 = time.perf_counter()
            _commit_state(tx)
        except (CommitFailedException, ValidationException):
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
            lo = from_bytes(k0.field_type, lo_b) if lo_b is not None else None
            hi = from_bytes(k0.field_type, hi_b) if hi_b is not None else None
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
        scan = ArrowScan(self.state.metadata, self.state.io, projected_schema=self.state.schema(), row_filter=AlwaysTrue())
        counts = [t.file.record_count for t in tasks]
        table = scan.to_table(tasks) if not any(t.delete_files for t in tasks) else None
        if table is None or table.num_rows != sum(counts):  # delete files from another writer: read file by file
            parts = [conform(scan.to_table([t]), target) for t in tasks]
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
        filt = And(EqualTo("_op", "delete"), GreaterThanOrEqual("_ts", since))
        found = self.log.scan(row_filter=filt, selected_fields=("_key", *VERSION_COLS)).to_arrow()
        if found.num_rows == 0:
            return empty
        found = conform(found, empty.schema)
        return found.filter(pc.is_in(found.column("_key"), value_set=candidates.column("_key")))

    # -- reading ---------------------------------------------------------------------------------
    def read(self, ref: str | int | None = None) -> pa.Table:
        """The current state (or the state at a snapshot id or tag name)."""
        self._refresh()
        if self.state is None:
            return pa.table({k: pa.array([], pa.string()) for k in self.key})
        snap = self.state.current_snapshot() if ref is None else self._snapshot_ref(ref)
        if snap is None:
            return arrow_schema(self.state.schema()).empty_table()
        return conform(self.state.scan(snapshot_id=snap.snapshot_id).to_arrow(), arrow_schema(self.state.schema()))

    def _snapshot_ref(self, ref: str | int) -> Any:
        assert self.state is not None
        snap = self.state.snapshot_by_id(ref) if isinstance(ref, int) else self.state.snapshot_by_name(ref)
        if snap is None:
            raise IcebergdoError(f"{self.state_name}: no snapshot or tag {ref!r} (tags: {', '.join(self.tags()) or 'none'})")
        return snap

    def as_of(self, timestamp: Any) -> pa.Table:
        """The current state as it was committed at `timestamp` (Iceberg time travel)."""
        sid = self.snapshot_id_as_of(timestamp)
        return self.read(sid) if sid is not None else self._empty()

    def state_at(self, timestamp: Any) -> pa.Table:
        """The state by event time: the fold of every logged change with `_ts <= timestamp`.

        Unlike `as_of` (what was committed by then), this includes changes that arrived later
        but happened before `timestamp`; computed from the log, so it reads the log up to then.
        """
        self._refresh()
        if self.log is None or self.log.current_snapshot() is None or self.state is None:
            return self._empty()
        until = _micros(parse_ts(timestamp, "timestamp"))
        rows = self.log.scan(row_filter=LessThanOrEqual("_ts", until)).to_arrow()
        rows = conform(rows, pa.schema([f.with_type(_small(f.type)) for f in rows.schema]))
        won = winners(rows)
        live = won.filter(pc.not_equal(won.column("_op"), "delete"))
        return conform(live, arrow_schema(self.state.schema())).sort_by([(k, "ascending") for k in self.key])

    def snapshot_id_as_of(self, timestamp: Any) -> int | None:
        """Id of the state snapshot current at `timestamp` (None before the first commit)."""
        self._refresh()
        if self.state is None:
            return None
        snap = self.state.snapshot_as_of_timestamp(_ms(parse_ts(timestamp, "as_of")))
        return snap.snapshot_id if snap else None

    def _empty(self) -> pa.Table:
        return arrow_schema(self.state.schema()).empty_table() if self.state is not None else pa.table({})

    def changes(self, since: Any = None, until: Any = None) -> pa.Table:
        """Log rows with `since <= _ts < until`, in version order."""
        self._refresh()
        if self.log is None or self.log.current_snapshot() is None:
            return pa.table({})
        filt: Any = AlwaysTrue()
        if since is not None:
            filt = And(filt, GreaterThanOrEqual("_ts", _micros(parse_ts(since, "since"))))
        if until is not None:
            filt = And(filt, LessThan("_ts", _micros(parse_ts(until, "until"))))
        out = self.log.scan(row_filter=filt).to_arrow()
        out = conform(out, arrow_schema(self.log.schema()))
        return out.sort_by([(c, "ascending") for c in VERSION_COLS])

    def tags(self) -> list[str]:
        if self.state is None:
            return []
        return sorted(n for n, r in self.state.metadata.refs.items() if r.snapshot_ref_type == "tag")

    # -- point-in-time snapshots -----------------------------------------------------------------
    def snapshot(self, day: date | str | None = None, *, export: bool = False, retention_days: int | None = None) -> dict[str, Any]:
        """Tag the state as of the end of `day` (default today, UTC) as `snapshot-YYYY-MM-DD`.

        The tag keeps its snapshot through expiry (for `retention_days`, default forever);
        `export=True` also writes `{warehouse}/{ns}/{name}/snapshots/{day}.parquet`.
        """
        d = _day(day)
        end = datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(days=1)
        if end > datetime.now(UTC):
            self.repair()  # the day is not over: tag the state with every logged change folded in
        self._refresh()
        if self.state is None or self.state.current_snapshot() is None:
            raise IcebergdoError(f"{self.state_name}: nothing to snapshot yet (no changes applied)")
        snap = self.state.snapshot_as_of_timestamp(_ms(end) - 1)
        if snap is None:
            raise IcebergdoError(f"{self.state_name}: no state existed at the end of {d.isoformat()}")
        tag = f"{TAG_PREFIX}{d.isoformat()}"
        if retention_days is not None and retention_days < 1:
            raise BadInputError("retention_days must be at least 1")
        max_age = retention_days * 86_400_000 if retention_days else None
        for attempt in range(5):
            try:
                self.state.manage_snapshots().create_tag(snap.snapshot_id, tag, max_ref_age_ms=max_age).commit()
                break
            except CommitFailedException:
                if attempt == 4:
                    raise
                self.state.refresh()
        out: dict[str, Any] = {"tag": tag, "snapshot_id": snap.snapshot_id, "rows": int(snap.summary.get("total-records", 0)) if snap.summary else None}
        if export:
            out["path"] = self.export(d, ref=snap.snapshot_id)
        return out

    def export(self, day: date | str | None = None, *, ref: str | int | None = None) -> str:
        """Write the state (at `ref`, default the day's tag or current) as one plain Parquet file."""
        d = _day(day)
        self._refresh()
        if self.state is None:
            raise IcebergdoError(f"{self.state_name}: nothing to export yet (no changes applied)")
        tag = f"{TAG_PREFIX}{d.isoformat()}"
        table = self.read(ref if ref is not None else tag if tag in self.state.metadata.refs else None)
        folder = layout.collection_data_path(self.namespace, self.name, "snapshots")
        path = f"{self.lh.config.warehouse.rstrip('/')}/{folder}/{d.isoformat()}.parquet"
        with self.state.io.new_output(path).create(overwrite=True) as out:
            pq.write_table(table, out, compression="zstd")
        return path


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
        for part in _determine_partitions(spec=self.spec, schema=self.schema, arrow_table=rows):
            self._add(part.partition_key, part.arrow_table_partition)

    def write(self, meta: Any, arrow: pa.Schema) -> list[Any]:
        """One data file per partition (split at the table's target file size), written in parallel."""
        from pyiceberg.table import TableProperties, WriteTask

        size = property_as_int(meta.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)
        task_schema = pyarrow_to_schema(arrow, name_mapping=meta.schema().name_mapping, format_version=meta.format_version)
        write_uuid, n = uuid.uuid4(), count()
        tasks = [
            WriteTask(write_uuid=write_uuid, task_id=next(n), schema=task_schema, record_batches=batches, partition_key=pk)
            for pk, parts in self.groups.values()
            for batches in bin_pack_arrow_table(pa.concat_tables(parts), size)
        ]
        return list(write_file(io=self._io, table_metadata=meta, tasks=iter(tasks))) if tasks else []


def _commit_state(tx: Any) -> None:
    """The state commit (a seam so tests can inject a crash between the log and state commits)."""
    tx.commit_transaction()


def _day(day: date | str | None) -> date:
    if day is None:
        return datetime.now(UTC).date()
    if isinstance(day, datetime):
        return day.astimezone(UTC).date()
    if isinstance(day, date):
        return day
    try:
        return date.fromisoformat(str(day))
    except ValueError:
        raise BadInputError(f"invalid date {day!r}: use YYYY-MM-DD") from None


def _load(lh: Lakehouse, name: str) -> Table | None:
    try:
        return lh.catalog.load_table(name)
    except NoSuchTableError:
        return None


def _evolve(table: Table, fields: Sequence[pa.Field]) -> Table:
    """Add top-level columns the table lacks (schema union); concurrent adds of the same column are fine."""
    for attempt in range(10):
        have = {f.name for f in table.schema().fields}
        new = [f.with_nullable(True) for f in fields if f.name not in have]
        if not new:
            return table
        try:
            with table.update_schema() as upd:
                upd.union_by_name(pa.schema(new))
            return table
        except CommitFailedException:
            time.sleep(0.02 * (attempt + 1))
            table.refresh()
    raise StorageError(f"{'.'.join(table.name())}: could not evolve the schema (concurrent schema changes)")


def _row_schema(schema: pa.Schema | Schema, key: Sequence[str]) -> pa.Schema:
    s = arrow_schema(schema) if isinstance(schema, Schema) else schema
    if not isinstance(s, pa.Schema):
        raise BadInputError(f"schema must be a pyarrow.Schema or pyiceberg Schema, got {type(schema).__name__}")
    bad = [n for n in s.names if n in RESERVED]
    if bad:
        raise BadInputError(f"schema uses reserved column name(s) {bad}")
    return pa.schema([f.with_type(_small(f.type)) for f in s])


# -- from the event stream --------------------------------------------------------------------------
def route_events(lh: Lakehouse, batch: pa.Table) -> None:
    """Apply the CDC events of a committed `events.raw` batch to their collections.

    An event with `type` `cdc.insert|update|delete` (or `collection.*`) and both `namespace`
    and `collection` set becomes one change: its `payload` (JSON) is the row, or
    `{"row": {...}, "key": ..., "seq": n}`; its `ts` is the change time and its `id` the change
    id. The events are already stored, and `events.raw` stays the source of truth, so an event
    that cannot be applied (no key, wrong type, reserved namespace) is skipped with a logged
    warning naming it instead of failing the ingest; everything else is applied, one `apply`
    per collection.
    """
    if batch.num_rows == 0 or not {"type", "namespace", "collection"} <= set(batch.column_names):
        return
    mask = pc.and_(
        pc.is_in(batch.column("type"), value_set=pa.array(list(CDC_EVENT_TYPES), pa.string())),
        pc.and_(pc.is_valid(batch.column("namespace")), pc.is_valid(batch.column("collection"))),
    )
    if not pc.any(mask).as_py():
        return
    cols = [c for c in ("id", "ts", "type", "namespace", "collection", "payload") if c in batch.column_names]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in batch.filter(mask).select(cols).to_pylist():
        groups.setdefault((row["namespace"], row["collection"]), []).append(row)
    for (ns, name), rows in groups.items():
        try:
            coll = lh.collection(ns, name)
        except IcebergdoError as e:
            log.warning("CDC: %d event(s) for %s.%s skipped: %s", len(rows), ns, name, e)
            continue
        changes, labels, ids = [], [], []
        for row in rows:
            label = f"event {row.get('id') or '?'} ({ns}.{name})"
            try:
                change = _event_change(row, label)
                parse_changes([change], coll.key, labels=[label])
            except BadInputError as e:
                log.warning("CDC: skipped %s", e)
                continue
            changes.append(change)
            labels.append(label)
            ids.append(row.get("id"))
        if not changes:
            continue
        try:
            coll.apply(changes, labels=labels, _ids=ids if all(ids) else None)
        except BadInputError as e:
            log.warning("CDC: %d event(s) for %s.%s skipped: %s", len(changes), ns, name, e)


def _event_change(row: Mapping[str, Any], label: str) -> dict[str, Any]:
    try:
        payload = json.loads(row["payload"]) if row.get("payload") else None
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise BadInputError(f"{label}: payload must be a JSON object carrying the key and the row")
    change: dict[str, Any] = {"op": CDC_EVENT_TYPES[row["type"]], "ts": row["ts"]}
    if isinstance(payload.get("row"), dict):
        change.update({k: v for k, v in payload.items() if k in ("row", "key", "seq")})
    else:
        change["row"] = payload
    return change
