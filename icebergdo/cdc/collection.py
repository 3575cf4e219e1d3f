"""A CDC collection: an append-only change log and a current-state table, both Iceberg.

The log is the source of truth; `apply` appends to it, then folds into the state (`state.py`).
Reads: the current state, time travel by commit time (`as_of`) or event time (`state_at`), the change
log between two times, and point-in-time tags with optional Parquet exports (`snapshot`, `export`).
Table design (names, partitioning, properties): `design.py`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
)
from pyiceberg.partitioning import (
    PartitionField,
    PartitionSpec,
)
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform

from icebergdo import layout
from icebergdo.cdc.changes import (
    LOG_META,
    RESERVED,
    VERSION_COLS,
    batch_from_arrow,
    build_batch,
    parse_changes,
)
from icebergdo.cdc.design import (
    DEFAULT_BUCKETS,
    DEFAULT_KEY,
    LOG_SUFFIX,
    P_BUCKETS,
    P_CHANGES,
    P_KEY,
    P_ROLE,
    STATE_PROPERTIES,
    TAG_PREFIX,
    arrow_schema,
    conform,
    evolve,
    micros,
    millis,
    row_schema,
    small_type,
)
from icebergdo.cdc.fold import winners
from icebergdo.cdc.state import ApplyResult, FoldEngine
from icebergdo.errors import (
    BadInputError,
    BadNameError,
    IcebergdoError,
)
from icebergdo.iceberg import datafiles, filters
from icebergdo.iceberg.schemas import fresh_schema
from icebergdo.schema import parse_ts
from icebergdo.tables import STREAMING_TABLE_PROPERTIES, Tables

log = logging.getLogger(__name__)
LOG_ATTEMPTS = 5  # log appends re-started after their base snapshot was expired under them


class Collection(FoldEngine):
    """One CDC collection. Get it with `lh.collection(namespace, name, key=["id"])`."""

    def __init__(self, tables: Tables, namespace: str, name: str, key: Sequence[str], buckets: int) -> None:
        self.tables = tables
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
        tables: Tables,
        namespace: str,
        name: str,
        key: Sequence[str] | str | None = None,
        schema: pa.Schema | Schema | None = None,
        *,
        buckets: int | None = None,
    ) -> Collection:
        """Open a collection, or prepare a new one (its tables are created from `schema` now, or at the first apply)."""
        layout.check_collection_namespace(namespace)
        layout.validate_name(name, "collection")
        if name.endswith(LOG_SUFFIX) or len(name) > 128 - len(LOG_SUFFIX):
            raise BadNameError(f"invalid collection {name!r}: must not end in {LOG_SUFFIX!r}, at most {128 - len(LOG_SUFFIX)} chars")
        if isinstance(key, str):
            key = [key]
        given = list(key) if key is not None else None
        state, logt = tables.find_table(f"{namespace}.{name}"), tables.find_table(f"{namespace}.{name}{LOG_SUFFIX}")
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
        coll = cls(tables, namespace, name, keys, n)
        coll.state, coll.log = state, logt
        if schema is not None or (existing is not None and (state is None or logt is None)):
            coll._ensure_tables(row_schema(schema, keys) if schema is not None else None)
        return coll

    @property
    def exists(self) -> bool:
        return self.state is not None

    def _refresh(self) -> None:
        if self.state is None or self.log is None:
            self.state = self.tables.find_table(self.state_name)
            self.log = self.tables.find_table(self.log_name)
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
            schema = fresh_schema(pa.schema([*LOG_META, *key_fields, *others]))
            ts_id = schema.find_field("_ts").field_id
            self.log = self.tables.create_table(
                self.log_name,
                schema,
                data_path=layout.collection_data_path(self.namespace, self.name, "deltas"),
                partition_spec=PartitionSpec(PartitionField(source_id=ts_id, field_id=1000, transform=DayTransform(), name="_ts_day")),
                sort_order=SortOrder(SortField(source_id=ts_id, transform=IdentityTransform())),
                properties={**STREAMING_TABLE_PROPERTIES, **props, P_ROLE: "log"},  # a commit per apply: docs/writer.md
            )
        if self.state is None:
            version = [LOG_META.field(c) for c in VERSION_COLS]
            schema = fresh_schema(pa.schema([*key_fields, *others, *version]), identifier=self.key)
            k0 = schema.find_field(self.key[0]).field_id
            self.state = self.tables.create_table(
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
    def apply(
        self,
        changes: Iterable[Any],
        *,
        labels: Sequence[str] | None = None,
        _ids: Sequence[str] | None = None,
        skip_logged: bool = False,
    ) -> ApplyResult:
        """Append `changes` to the log, then fold the log into the current state.

        Each change is `{"op": "insert"|"update"|"delete", "ts": ..., "seq": ..., <row>}` or
        `{"op", "ts", "seq", "row": {...}}` (docs/cdc.md). Bad input raises `BadInputError`
        and changes neither table. `skip_logged` (with `_ids`, e.g. `changes.input_ids`): changes
        whose id is already in the log are not logged again, so re-applying an input is a no-op.
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
        if skip_logged and _ids is not None:
            batch = self._not_logged(batch)
            if batch.num_rows == 0:
                return self.repair()
        t1 = time.perf_counter()
        log_snapshot = self._append_log(batch)
        t2 = time.perf_counter()
        result = self._fold(hint=(log_snapshot, batch))
        result.changes = batch.num_rows
        result.log_snapshot_id = log_snapshot
        result.seconds = {"validate": t1 - t0, "log": t2 - t1, "fold": time.perf_counter() - t2, **result.seconds}
        return result

    def _not_logged(self, batch: pa.Table) -> pa.Table:
        """The rows of `batch` whose `_id` is not in the log yet (read: `_id` of the log files whose bounds overlap)."""
        assert self.log is not None
        if self.log.current_snapshot() is None:
            return batch
        ids = batch.column("_id")
        lo, hi = pc.min(ids).as_py(), pc.max(ids).as_py()
        logged = self.log.scan(row_filter=And(filters.ge("_id", lo), filters.le("_id", hi)), selected_fields=("_id",)).to_arrow()
        if logged.num_rows == 0:
            return batch
        return batch.filter(pc.invert(pc.is_in(ids, value_set=logged.column("_id").combine_chunks())))

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
        self.log = evolve(self.log, rows)
        data = conform(batch.sort_by([("_ts", "ascending")]), arrow_schema(self.log.schema()))
        for attempt in range(LOG_ATTEMPTS):
            try:
                datafiles.append(self.log, data, {P_CHANGES: str(batch.num_rows)})  # our one write path: the ADR layout
                break
            except (ValueError, TypeError) as e:
                raise BadInputError(f"{self.log_name}: batch does not fit the log schema: {e}") from None
            except (ValidationException, FileNotFoundError):
                # The snapshot the append started from was expired meanwhile (a maintenance run with
                # a short --older-than): pyiceberg's own retry refuses it, or its manifest list is
                # already gone when the fast append reads it. Nothing was committed: start again.
                if attempt == LOG_ATTEMPTS - 1:
                    raise
                self.log = self.log.refresh()
        snap = self.log.current_snapshot()
        assert snap is not None
        return snap.snapshot_id

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
        until = micros(parse_ts(timestamp, "timestamp"))
        rows = self.log.scan(row_filter=filters.le("_ts", until)).to_arrow()
        rows = conform(rows, pa.schema([f.with_type(small_type(f.type)) for f in rows.schema]))
        won = winners(rows)
        live = won.filter(pc.not_equal(won.column("_op"), "delete"))
        return conform(live, arrow_schema(self.state.schema())).sort_by([(k, "ascending") for k in self.key])

    def snapshot_id_as_of(self, timestamp: Any) -> int | None:
        """Id of the state snapshot current at `timestamp` (None before the first commit)."""
        self._refresh()
        if self.state is None:
            return None
        snap = self.state.snapshot_as_of_timestamp(millis(parse_ts(timestamp, "as_of")))
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
            filt = And(filt, filters.ge("_ts", micros(parse_ts(since, "since"))))
        if until is not None:
            filt = And(filt, filters.lt("_ts", micros(parse_ts(until, "until"))))
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
        snap = self.state.snapshot_as_of_timestamp(millis(end) - 1)
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
        path = f"{self.tables.config.warehouse.rstrip('/')}/{folder}/{d.isoformat()}.parquet"
        with self.state.io.new_output(path).create(overwrite=True) as out:
            pq.write_table(table, out, compression="zstd")
        return path


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


