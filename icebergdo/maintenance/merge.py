"""Putting a partition's rows in sort order when each input file is sorted already (compaction).

Every file the writer commits is sorted by `ts`, so compaction's input is a set of sorted runs,
read in order of their lower bounds. Measured on the realistic shape (no ids, 30 % of events up
to 20 minutes late, ~250-byte JSON payloads; 200k rows in 32 files per hour partition), the
order itself is nearly free (`icebergdo.iceberg.datafiles.order`, the append path's: a stable
sort of the ts column, ~10 ms with `sort_indices`, less with its NumPy key sort) and a merge's
real cost is moving the rows (`Table.take` over the per-file chunks: ~35 ms; copying each column
contiguous first, then taking: ~45 ms). Reading the files and
writing the output cost several times more; what compaction adds beyond them is kept to:

- already in order (stream-like files in lower-bound order): nothing moves;
- long runs of consecutive rows (files that overlap only at their edges): the runs are zero-copy
  slices, and only the interleaved rows between them are gathered, each gap from the few rows it
  spans (Arrow's take over a chunked table concatenates every chunk first);
- interleaved throughout (late events): one `take` of the whole table.

The order is stable, so equal keys keep file order, as a k-way merge of the runs would.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# A run of consecutive input rows at least this long is copied as a zero-copy slice.
MIN_RUN = 4096
# Slices are used when long runs hold at least this share of the rows; else one take per column.
RUN_SHARE = 0.9


def runs(indices: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(starts, lengths) of the runs of consecutive values in `indices`, as positions in `indices` (int64 arrays)."""
    n = len(indices)
    if n == 0:
        return pa.array([], pa.int64()), pa.array([], pa.int64())
    idx = indices.cast(pa.int64())
    step = pc.subtract(idx.slice(1), idx.slice(0, n - 1))
    breaks = pc.add(pc.indices_nonzero(pc.not_equal(step, 1)).cast(pa.int64()), 1)
    starts = pa.concat_arrays([pa.array([0], pa.int64()), breaks])
    ends = pa.concat_arrays([breaks, pa.array([n], pa.int64())])
    return starts, pc.subtract(ends, starts)


def gather(table: pa.Table, indices: pa.Array, *, min_run: int = MIN_RUN) -> pa.Table:
    """`table.take(indices)` (same rows, same result), copying only what has to move."""
    n = len(indices)
    if n == 0:
        return table.slice(0, 0)
    idx = indices.cast(pa.int64())
    breaks = pc.sum(pc.not_equal(pc.subtract(idx.slice(1), idx.slice(0, n - 1)), 1)).as_py() or 0
    if breaks + 1 > (1 - RUN_SHARE) * n + n / min_run:  # too many runs for long ones to hold RUN_SHARE of the rows
        return table.take(indices)
    starts, lengths = runs(indices)
    long = pc.greater_equal(lengths, min_run)
    if (pc.sum(pc.filter(lengths, long)).as_py() or 0) < RUN_SHARE * n:
        return table.take(indices)
    run_starts = pc.filter(starts, long).to_pylist()
    run_lengths = pc.filter(lengths, long).to_pylist()
    pieces: list[pa.Table] = []
    pos = 0
    for start, length in [*zip(run_starts, run_lengths, strict=True), (len(indices), 0)]:
        if start > pos:  # interleaved rows between two long runs: gathered from the few rows they span
            pieces.append(_take_local(table, indices.slice(pos, start - pos)))
        if length:
            pieces.append(table.slice(indices[start].as_py(), length))
        pos = start + length
    return pa.concat_tables(pieces)


def _take_local(table: pa.Table, indices: pa.Array) -> pa.Table:
    """`table.take(indices)` for indices that fall in a narrow range: Arrow's take over a chunked
    table concatenates the chunks first, so take from the zero-copy slice they span instead."""
    lo, hi = (v.as_py() for v in pc.min_max(indices).values())
    return table.slice(lo, hi - lo + 1).take(pc.subtract(indices.cast(pa.int64()), lo))
