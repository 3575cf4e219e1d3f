"""Batch ULIDs (icebergdo.ids): valid for python-ulid's parser, time-sortable, unique, deterministic with a seed."""

from __future__ import annotations

import pyarrow as pa
import pytest
from ulid import ULID

from icebergdo import ids


def test_batch_ulids_parse_carry_their_time_and_sort_by_it() -> None:
    ms = [0, 1, 1772359200000, 1772359200001, 1772359200000, ids.MAX_MS, 946684800000]
    out = ids.ulids(pa.array(ms, pa.int64())).to_pylist()
    assert len(set(out)) == len(out)
    for text, expected in zip(out, ms, strict=True):
        parsed = ULID.from_str(text)  # raises on anything that is not a ULID
        assert str(parsed) == text and parsed.milliseconds == expected
    order = sorted(range(len(ms)), key=lambda i: out[i])
    assert [ms[i] for i in order] == sorted(ms)


def test_random_part_is_fresh_and_a_seed_makes_it_repeatable() -> None:
    ms = pa.array([1772359200000] * 5000, pa.int64())
    a, b = ids.ulids(ms).to_pylist(), ids.ulids(ms).to_pylist()
    assert len(set(a) | set(b)) == 10000  # 80 random bits: no collisions
    s1, s2 = ids.ulids(ms, seed=b"file:0").to_pylist(), ids.ulids(ms, seed=b"file:0").to_pylist()
    assert s1 == s2 and len(set(s1)) == 5000
    assert ids.ulids(ms, seed=b"file:1").to_pylist() != s1
    # id i depends only on (seed, i): a longer batch extends a shorter one
    assert ids.ulids(pa.array([1772359200000] * 10, pa.int64()), seed=b"file:0").to_pylist() == s1[:10]


def test_sliced_and_chunked_input() -> None:
    ms = pa.chunked_array([pa.array([5, 6], pa.int64()), pa.array([7], pa.int64())])
    assert [ULID.from_str(t).milliseconds for t in ids.ulids(ms).to_pylist()] == [5, 6, 7]
    sliced = pa.array(range(100), pa.int64()).slice(90)
    assert [ULID.from_str(t).milliseconds for t in ids.ulids(sliced).to_pylist()] == list(range(90, 100))
    assert ids.ulids(pa.array([], pa.int64())).to_pylist() == []


@pytest.mark.parametrize("bad", [[-1], [ids.MAX_MS + 1], [None]])
def test_times_a_ulid_cannot_hold_are_refused(bad: list) -> None:
    with pytest.raises(ValueError):
        ids.ulids(pa.array(bad, pa.int64()))
