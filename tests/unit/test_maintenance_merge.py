"""Merging sorted runs: the order and the gathered rows equal a stable sort, for every shape."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from icebergdo.iceberg import datafiles
from icebergdo.maintenance import merge


def runs_table(runs: list[list[int]]) -> pa.Table:
    """One chunk per run (as files read in order), rows tagged with (run, position) to check stability."""
    chunks = [
        pa.record_batch({"ts": pa.array(r, pa.int64()), "tag": pa.array([f"{i}:{j}" for j in range(len(r))]), "x": pa.array([float(v) for v in r])})
        for i, r in enumerate(runs)
    ]
    return pa.Table.from_batches(chunks)


def stable_sort(table: pa.Table) -> pa.Table:
    return table.take(pc.sort_indices(table, [("ts", "ascending")]))


def test_already_sorted_input_is_left_alone() -> None:
    t = runs_table([[1, 2, 3], [3, 4], [5, 9]])
    assert datafiles.order(t, ["ts"]) is None
    assert datafiles.order(t, []) is None


@pytest.mark.parametrize("shape", ["edges", "interleaved", "late", "duplicates"])
def test_gather_equals_a_stable_sort(shape: str) -> None:
    rng = random.Random(shape)
    runs: list[list[int]] = []
    for f in range(12):
        if shape == "edges":  # successive slices that overlap at their edges
            r = sorted(rng.randrange(f * 1000 - 20, (f + 1) * 1000 + 20) for _ in range(900))
        elif shape == "interleaved":
            r = sorted(rng.randrange(0, 12_000) for _ in range(900))
        elif shape == "late":  # mostly on time, 30 % up to 3 files late
            r = sorted(a - (rng.randrange(3000) if rng.random() < 0.3 else 0) for a in (rng.randrange(f * 1000, (f + 1) * 1000) for _ in range(900)))
        else:
            r = sorted(rng.randrange(0, 40) for _ in range(900))
        runs.append(r)
    t = runs_table(runs)
    idx = datafiles.order(t, ["ts"])
    assert idx is not None
    expected = stable_sort(t)
    for min_run in (1, 8, 64, merge.MIN_RUN):  # slices + gaps, through to one take per column
        assert merge.gather(t, idx, min_run=min_run).equals(expected)
    if shape == "edges":  # mostly long runs: they are sliced, not copied
        assert merge.gather(t, idx, min_run=64).column("ts").num_chunks > 12


def test_runs_are_found() -> None:
    starts, lengths = merge.runs(pa.array([5, 6, 7, 0, 1, 9], pa.uint64()))
    assert starts.to_pylist() == [0, 3, 5] and lengths.to_pylist() == [3, 2, 1]
    assert merge.gather(runs_table([[]]), pa.array([], pa.uint64())).num_rows == 0
