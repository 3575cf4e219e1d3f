"""The fold rule, with no I/O: the current state is, per key, the change with the greatest version.

Every change has a version `(ts, seq, id)` where `id` is a ULID given at arrival, so the versions of
a collection are totally ordered; the state keeps, per key, the change with the greatest version
(dropped when that change is a delete). That rule is commutative and idempotent, which is what lets
a crashed or concurrent fold be redone safely (see `state.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from icebergdo.cdc.changes import VERSION_COLS


def winners(batch: pa.Table) -> pa.Table:
    """One row per `_key`: the change with the greatest `(_ts, _seq, _id)`."""
    if batch.num_rows == 0 or pc.count_distinct(batch.column("_key")).as_py() == batch.num_rows:
        return batch  # one change per key already (bulk loads): nothing to pick
    ordered = batch.sort_by([(c, "ascending") for c in VERSION_COLS])
    idx = arange(ordered.num_rows)
    last = pa.table({"_key": ordered.column("_key"), "__i": idx}).group_by("_key", use_threads=False).aggregate([("__i", "max")])
    picks = last.column("__i_max")
    return ordered.take(pc.take(picks, pc.sort_indices(picks)))


def newer_or_same(a: Mapping[str, Any], b: Mapping[str, Any]) -> pa.Array:
    """Element-wise: version `a` >= version `b` (each a mapping of `_ts`, `_seq`, `_id` arrays)."""
    gt_ts, eq_ts = pc.greater(a["_ts"], b["_ts"]), pc.equal(a["_ts"], b["_ts"])
    gt_seq, eq_seq = pc.greater(a["_seq"], b["_seq"]), pc.equal(a["_seq"], b["_seq"])
    ge_id = pc.greater_equal(a["_id"], b["_id"])
    return pc.or_(gt_ts, pc.and_(eq_ts, pc.or_(gt_seq, pc.and_(eq_seq, ge_id))))


@dataclass
class Merge:
    """What folding `winners` into some existing state rows decides."""

    replaced_rows: pa.Array  # positions in `existing` whose row is superseded (updated or deleted)
    accepted: pa.Table  # winners that are puts and newer than the existing row (or new keys, unchecked)
    new_keys: pa.Array  # boolean mask over `accepted`: key had no existing row (needs the tombstone check)


def arange(n: int) -> pa.Array:
    """0..n-1 as int64, in C++ (no numpy needed)."""
    if n == 0:
        return pa.array([], pa.int64())
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), 1)


def merge(existing: pa.Table, won: pa.Table, key: Sequence[str]) -> Merge:
    """Compare each winner with the existing row of its key (if any) by version."""
    # Only rows whose first key column matches some winner can be involved: a hash probe, then a small join.
    hit = pc.indices_nonzero(pc.is_in(existing.column(key[0]), value_set=won.column(key[0]))).cast(pa.int64())
    e = existing.select([*key, *VERSION_COLS]).take(hit).append_column("__row", hit)
    w = pa.table(
        {
            **{k: won.column(k) for k in key},
            "w_ts": won.column("_ts"),
            "w_seq": won.column("_seq"),
            "w_id": won.column("_id"),
            "__w": arange(won.num_rows),
        }
    )
    j = e.join(w, keys=list(key), join_type="inner", use_threads=True)
    newer = newer_or_same(
        {"_ts": j.column("w_ts"), "_seq": j.column("w_seq"), "_id": j.column("w_id")},
        {c: j.column(c) for c in VERSION_COLS},
    )
    replaced = _flat(pc.filter(j.column("__row"), newer))
    stale = _flat(pc.filter(j.column("__w"), pc.invert(newer)))
    matched = _flat(j.column("__w"))
    positions = arange(won.num_rows)
    accepted_mask = pc.and_(
        pc.invert(pc.is_in(positions, value_set=stale)), pc.not_equal(won.column("_op"), "delete")
    )
    is_new = pc.invert(pc.is_in(positions, value_set=matched))
    return Merge(replaced_rows=replaced, accepted=won.filter(accepted_mask), new_keys=pc.filter(is_new, accepted_mask))


def _flat(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(a, pa.ChunkedArray):
        return pa.concat_arrays(a.chunks) if a.num_chunks else pa.array([], a.type)
    return a


def drop_tombstoned(accepted: pa.Table, new_keys: pa.Array, deletes: pa.Table) -> pa.Table:
    """Drop new-key puts that an already-logged delete with a greater version supersedes.

    `deletes` has `_key` and the version columns of delete changes from the log.
    """
    if deletes.num_rows == 0 or accepted.num_rows == 0:
        return accepted
    latest = winners(deletes.append_column("_op", pa.array(["delete"] * deletes.num_rows, pa.string())))
    cand = accepted.select(["_key", *VERSION_COLS]).append_column("__a", arange(accepted.num_rows))
    cand = cand.filter(new_keys)
    d = pa.table({"_key": latest.column("_key"), "d_ts": latest.column("_ts"), "d_seq": latest.column("_seq"), "d_id": latest.column("_id")})
    j = cand.join(d, keys="_key", join_type="inner")
    if j.num_rows == 0:
        return accepted
    put_wins = newer_or_same({c: j.column(c) for c in VERSION_COLS}, {"_ts": j.column("d_ts"), "_seq": j.column("d_seq"), "_id": j.column("d_id")})
    dead = _flat(pc.filter(j.column("__a"), pc.invert(put_wins)))
    if len(dead) == 0:
        return accepted
    return accepted.filter(pc.invert(pc.is_in(arange(accepted.num_rows), value_set=dead)))
