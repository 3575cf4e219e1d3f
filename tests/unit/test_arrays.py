"""Arrow columns as single arrays without needless copies (icebergdo.arrays)."""

from __future__ import annotations

import pyarrow as pa

from icebergdo import arrays


def test_array_does_not_copy_a_single_chunk() -> None:
    chunk = pa.array(["a" * 100] * 10)
    one = pa.chunked_array([chunk])
    assert arrays.array(one).buffers()[2].address == chunk.buffers()[2].address
    assert arrays.array(chunk) is chunk
    two = pa.chunked_array([chunk, chunk])
    assert arrays.array(two).to_pylist() == chunk.to_pylist() * 2
    assert len(arrays.array(pa.chunked_array([], pa.string()))) == 0
    half = pa.chunked_array([chunk.slice(0, 5), chunk.slice(5)])
    table = pa.table({"a": one, "b": half})
    flat = arrays.contiguous(table)
    assert [c.num_chunks for c in flat.columns] == [1, 1]
    assert flat.column("a").chunk(0).buffers()[2].address == chunk.buffers()[2].address
    assert flat.equals(table)
