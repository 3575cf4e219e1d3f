"""The dedupe rule on its own (no storage): first arrival stays, later copies within the window go."""

from __future__ import annotations

import random

import pyarrow as pa

from icebergdo.maintenance.dedupe import duplicates, file_order

H = 3_600_000_000  # one hour in µs


def drops(rows: list[tuple[str | None, int | None, str, int]], window_us: int = 24 * H) -> list[bool]:
    keys, arrival, files, pos = zip(*rows, strict=True)
    return duplicates(pa.array(keys, pa.string()), pa.array(arrival, pa.int64()), pa.array(files), pa.array(pos, pa.int64()), window_us).to_pylist()


def reference(rows: list[tuple[str | None, int | None, str, int]], window_us: int) -> list[bool]:
    """The rule, row by row: after an id's first arrival, a copy arriving at most the window later goes
    (one without an arrival time too); null ids never go."""
    out = [False] * len(rows)
    by_key: dict[str, list[int]] = {}
    for i, (k, _a, _f, _r) in enumerate(rows):
        if k is not None:
            by_key.setdefault(k, []).append(i)
    inf = float("inf")
    for idxs in by_key.values():
        idxs.sort(key=lambda i: (rows[i][1] if rows[i][1] is not None else inf, rows[i][2], rows[i][3]))
        first = rows[idxs[0]][1]
        for cur in idxs[1:]:
            a = rows[cur][1]
            out[cur] = a is None or first is None or a - first <= window_us
    return out


def test_first_arrival_stays_and_later_copies_go() -> None:
    rows = [("a", 5 * H, "B.parquet", 0), ("a", 1 * H, "C.parquet", 3), ("b", 1 * H, "C.parquet", 0), ("a", 1 * H, "A.parquet", 9)]
    # "a" arrived at 1h twice (A before C in file order) and again at 5h: only A's copy stays.
    assert drops(rows) == [True, True, False, False]


def test_window_counts_from_the_first_arrival_and_nulls() -> None:
    rows = [("x", 0, "F", 0), ("x", 20 * H, "F", 1), ("x", 40 * H, "F", 2), ("y", 0, "F", 3), ("y", 30 * H, "F", 4),
            (None, 0, "F", 5), (None, 0, "F", 6), ("z", None, "F", 7), ("z", None, "F", 8)]
    # x: 20h after the first (within 24h) → a copy; 40h after the first → a new event.
    # y: 30h after its first arrival → a new event. Null ids are never copies; without arrival
    # times the first in file order stays and the rest are copies.
    assert drops(rows) == [False, True, False, False, False, False, False, False, True]
    assert drops([("k", 0, "F", 0), ("k", 0, "F", 1)], window_us=0) == [False, True]  # same arrival, window 0


def test_matches_the_row_by_row_rule_on_random_input() -> None:
    rng = random.Random(11)
    rows = [(rng.choice(["a", "b", "c", None]), rng.choice([rng.randrange(0, 72) * H, None]) if rng.random() < 0.1 else rng.randrange(0, 72) * H,
             f"{rng.randrange(5)}.parquet", rng.randrange(100)) for _ in range(400)]
    for window in (0, H, 24 * H, 10**12):
        assert drops(rows, window) == reference(rows, window)


def test_file_order_ignores_the_compaction_prefix() -> None:
    assert file_order("s3://b/events/2026/01/01/00/_compact-01J00000000000000000000000.parquet") == "01J00000000000000000000000.parquet"
    assert file_order("file:///w/events/2026/01/01/00/01H00000000000000000000000.parquet") == "01H00000000000000000000000.parquet"
