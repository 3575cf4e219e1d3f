"""ULIDs for a whole batch at once, built with NumPy instead of one Python object per event.

A ULID is 48 bits of Unix time in milliseconds followed by 80 random bits, written as 26 Crockford
base32 characters (10 for the time, 16 for the randomness). Crockford's alphabet is in ASCII order,
so the strings sort by time, and any reader's ULID parser accepts them.

Why vectorised: `ULID.from_datetime` + `str()` cost ~3 µs per event, which was two thirds of an
append of id-less events (issue 11). Here the 26 characters of every id are computed as one
(n, 26) byte matrix — each time character is a 5-bit slice of the milliseconds, each random
character the low 5 bits of one random byte, all looked up in the alphabet at once — and that
matrix becomes the data buffer of an Arrow string column (fixed 26-byte offsets), with no per-row
work (0.07 s for 400k ids, against 0.33 s for the Arrow-kernel version this replaced).

The 80 "random" bits are either fresh (`os.urandom`) or derived from a seed (SHAKE-256 of it as a
keystream), so the same seed and position give the same id: `icebergdo ingest` uses that to give
id-less events of a file the same ids on a re-run (issue 14 item 3).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from icebergdo import arrays

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
MAX_MS = (1 << 48) - 1  # the latest time a ULID can hold (year 10889)
_ALPHABET = np.frombuffer(CROCKFORD.encode(), np.uint8)


def random_bytes(n: int, seed: bytes | None = None) -> bytes:
    """16 bytes per id: fresh from the OS, or a deterministic keystream of `seed`."""
    if seed is None:
        return os.urandom(16 * n)
    return hashlib.shake_256(b"icebergdo-ulid\x00" + seed).digest(16 * n)


def ulids(ms: pa.Array | pa.ChunkedArray, seed: bytes | None = None) -> pa.Array:
    """One ULID string per millisecond value (int64, 0 <= ms <= MAX_MS, no nulls).

    With `seed`, the random part of id i is a function of (seed, i) only.
    """
    ms = arrays.array(ms).cast(pa.int64())
    n = len(ms)
    if n == 0:
        return pa.array([], pa.string())
    if ms.null_count or pc.min(ms).as_py() < 0 or pc.max(ms).as_py() > MAX_MS:
        raise ValueError("ULID times must be non-null milliseconds between 1970 and 10889")
    t = np.asarray(ms.to_numpy(zero_copy_only=False), dtype=np.uint64)
    chars = np.empty((n, 26), np.uint8)
    for k in range(10):  # time, most significant 5 bits first (the first character holds 3 bits)
        chars[:, k] = _ALPHABET[(t >> np.uint64(5 * (9 - k))) & np.uint64(31)]
    noise = np.frombuffer(random_bytes(n, seed), np.uint8).reshape(n, 16)
    chars[:, 10:] = _ALPHABET[noise & 31]
    offsets = np.arange(0, 26 * (n + 1), 26, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(chars)])
