"""The CDC fold rule (`icebergdo.cdc.fold`) against a plain-Python fold, with hypothesis.

The rule: per key, the change with the greatest version `(ts, seq, id)` wins, and the key is absent
when that change is a delete. Folding a batch into a state built from earlier changes (with the
log's deletes as tombstones), in any order, any number of times, must give what folding everything
at once gives: that is what lets a crashed or concurrent fold be redone (`cdc/state.py`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from icebergdo.cdc.changes import LOG_META, VERSION_COLS
from icebergdo.cdc.fold import Merge, arange, drop_tombstoned, merge, newer_or_same, winners
from icebergdo.schema import TS

T0 = datetime(2026, 11, 25, tzinfo=UTC)
KEY = ["k"]

# A change: (key, op, ts offset in seconds, seq, id). Few keys, times and seqs, so ties are common;
# ids are unique (ULIDs in real life), so versions are totally ordered.
Change = tuple[int, str, int, int, str]


@st.composite
def change_logs(draw: st.DrawFn, max_size: int = 40) -> list[Change]:
    n = draw(st.integers(0, max_size))
    ids = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n, unique=True))
    return [
        (draw(st.integers(0, 5)), draw(st.sampled_from(["insert", "update", "delete"])), draw(st.integers(0, 3)), draw(st.integers(-1, 2)), f"{i:026d}")
        for i in ids
    ]


def version(c: Change) -> tuple[int, int, str]:
    return (c[2], c[3], c[4])


def model_fold(changes: list[Change]) -> dict[int, str]:
    """Plain Python: key → id of the winning put (keys whose winner is a delete are absent)."""
    best: dict[int, Change] = {}
    for c in changes:
        if c[0] not in best or version(c) > version(best[c[0]]):
            best[c[0]] = c
    return {k: c[4] for k, c in best.items() if c[1] != "delete"}


def log_batch(changes: list[Change]) -> pa.Table:
    """Change-log rows as `changes.build_batch` lays them out: meta columns, the key, a value."""
    return pa.Table.from_arrays(
        [
            pa.array([c[4] for c in changes], pa.string()),
            pa.array([c[1] for c in changes], pa.string()),
            pa.array([str(c[0]) for c in changes], pa.string()),
            pa.array([T0 + timedelta(seconds=c[2]) for c in changes], TS),
            pa.array([c[3] for c in changes], pa.int64()),
            pa.array([c[0] for c in changes], pa.int64()),
            pa.array([f"v{c[4]}" for c in changes], pa.string()),
        ],
        schema=LOG_META.append(pa.field("k", pa.int64())).append(pa.field("v", pa.string())),
    )


def state_table(changes: list[Change]) -> pa.Table:
    """The current state the way the state table holds it: key, row and version columns of the winning puts."""
    won = model_fold(changes)
    rows = [c for c in changes if won.get(c[0]) == c[4]]
    return log_batch(rows).select(["k", "v", *VERSION_COLS])


def fold_into(state: pa.Table, batch: pa.Table, deletes: pa.Table) -> pa.Table:
    """What `FoldEngine._fold_once` does with the rule: winners, merge with the state, tombstone check."""
    won = winners(batch)
    if state.num_rows:
        m = merge(state, won, KEY)
    else:
        puts = won.filter(pc.not_equal(won.column("_op"), "delete"))
        m = Merge(pa.array([], pa.int64()), puts, pa.repeat(pa.scalar(True), puts.num_rows))
    accepted = drop_tombstoned(m.accepted, m.new_keys, deletes)
    kept = state.filter(pc.invert(pc.is_in(arange(state.num_rows), value_set=m.replaced_rows)))
    return pa.concat_tables([kept, accepted.select(kept.column_names)])


def as_dict(state: pa.Table) -> dict[int, str]:
    keys = state.column("k").to_pylist()
    assert len(keys) == len(set(keys)), "one row per key"
    return dict(zip(keys, state.column("_id").to_pylist(), strict=True))


def deletes_of(changes: list[Change]) -> pa.Table:
    return log_batch([c for c in changes if c[1] == "delete"]).select(["_key", *VERSION_COLS])


# -- winners -------------------------------------------------------------------------------------
@given(change_logs())
def test_winners_is_the_greatest_version_per_key(changes: list[Change]) -> None:
    won = winners(log_batch(changes))
    expected = {}
    for c in changes:
        if c[0] not in expected or version(c) > version(expected[c[0]]):
            expected[c[0]] = c
    got = dict(zip(won.column("k").to_pylist(), won.column("_id").to_pylist(), strict=True))
    assert won.num_rows == len(got) == len(expected)
    assert got == {k: c[4] for k, c in expected.items()}
    assert won.schema == log_batch(changes).schema  # every column kept


@given(change_logs())
def test_winners_does_not_depend_on_row_order(changes: list[Change]) -> None:
    forward, backward = winners(log_batch(changes)), winners(log_batch(changes[::-1]))
    assert sorted(forward.column("_id").to_pylist()) == sorted(backward.column("_id").to_pylist())


def test_winners_of_distinct_keys_is_the_batch_itself() -> None:
    batch = log_batch([(1, "insert", 0, 0, "a" * 26), (2, "delete", 0, 0, "b" * 26)])
    assert winners(batch) is batch
    assert winners(batch.slice(0, 0)).num_rows == 0


@given(st.tuples(st.integers(0, 2), st.integers(-1, 1), st.integers(0, 2)), st.tuples(st.integers(0, 2), st.integers(-1, 1), st.integers(0, 2)))
def test_newer_or_same_is_lexicographic(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    def cols(v: tuple[int, int, int]) -> dict[str, pa.Array]:
        return {"_ts": pa.array([T0 + timedelta(seconds=v[0])], TS), "_seq": pa.array([v[1]], pa.int64()), "_id": pa.array([f"{v[2]:026d}"])}

    assert newer_or_same(cols(a), cols(b))[0].as_py() is (a >= b)


# -- the fold --------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(change_logs(), change_logs(max_size=20), st.data())
def test_folding_a_batch_into_a_state_equals_folding_everything(earlier: list[Change], fresh: list[Change], data: st.DataObject) -> None:
    """State from `earlier`, then one batch of new changes and replays of earlier ones (a redone fold)."""
    replays = data.draw(st.lists(st.sampled_from(earlier), max_size=10)) if earlier else []
    seen = {c[4] for c in earlier}
    batch = [c for c in fresh if c[4] not in seen] + replays
    everything = earlier + [c for c in batch if c[4] not in seen]
    got = fold_into(state_table(earlier), log_batch(batch), deletes_of(everything))
    assert as_dict(got) == model_fold(everything)


@settings(max_examples=60, deadline=None)
@given(change_logs(max_size=60), st.data())
def test_any_split_into_batches_in_any_order_gives_the_same_state(changes: list[Change], data: st.DataObject) -> None:
    """Commutative and idempotent: fold the changes as batches, in a shuffled order, some twice."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(changes)), max_size=4)))
    batches = [changes[a:b] for a, b in zip([0, *cuts], [*cuts, len(changes)], strict=True)]
    order = data.draw(st.permutations(batches))
    order += data.draw(st.lists(st.sampled_from(batches), max_size=2)) if batches else []
    state = state_table([])
    logged: list[Change] = []
    for batch in order:
        logged += [c for c in batch if c not in logged]  # the log is committed before its fold
        state = fold_into(state, log_batch(batch), deletes_of(logged))
    assert as_dict(state) == model_fold(changes)


def test_a_late_insert_does_not_resurrect_a_deleted_key() -> None:
    """The tombstone case spelled out: delete at 10:00:02 folded, then an insert stamped 10:00:01 arrives."""
    delete, late_insert = (7, "delete", 2, 0, "0" * 25 + "2"), (7, "insert", 1, 0, "0" * 25 + "1")
    state = fold_into(state_table([]), log_batch([delete]), deletes_of([delete]))
    assert state.num_rows == 0
    state = fold_into(state, log_batch([late_insert]), deletes_of([delete, late_insert]))
    assert state.num_rows == 0
    newer_insert = (7, "insert", 3, 0, "0" * 25 + "3")
    state = fold_into(state, log_batch([newer_insert]), deletes_of([delete, late_insert, newer_insert]))
    assert as_dict(state) == {7: newer_insert[4]}


def test_arange() -> None:
    assert arange(0).to_pylist() == [] and arange(4).to_pylist() == [0, 1, 2, 3] and arange(3).type == pa.int64()
