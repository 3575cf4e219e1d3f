"""Process-wide memory settings a command may choose for the process it owns (never the library).

A command asks for them with `set_defaults` on its parser (`return_freed_memory=True`,
`no_thp=True`); `cli.main` applies them (`apply`) before the command runs.

Freed memory back at once (`ingest`): Arrow's default allocator (mimalloc) keeps freed pages for
reuse, and a 300 MB ingest peaked at ~800 MB with it, ~490 MB with jemalloc returning pages
immediately (bench/ingest_file.py). The pool must be chosen before Arrow loads (its C++ side, the
Parquet writer included, reads `ARROW_DEFAULT_MEMORY_POOL` only then); a user's own setting wins,
and a pyarrow without jemalloc is left as it is.

Transparent huge pages: on Linux hosts where THP is `madvise` (the common default), large Arrow
buffers are madvised for huge pages, and with `defrag` also `madvise` the kernel compacts memory
synchronously to find them when such a buffer is first touched. On the 2-core development machine
that was most of the variance of appends and compaction: the first large gather after other work
freed memory spent 0.61 s in the kernel (`sys`) for 0.05 s of copying (`/proc/vmstat`
`compact_stall` growing), and the same `write_rows` call took 0.42-0.71 s from run to run. With
THP off for the process the same work is steady (0.58-0.60 s per 1M-event append, compaction of
late events 0.72-0.78x raw instead of 0.48-0.73x), at the cost of the warm best case. `maintain`
and `serve` turn it off for themselves (`prctl(PR_SET_THP_DISABLE)`, inherited by children);
a host whose THP `defrag` is `defer` or `never` does not stall, and nothing changes there.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys

PR_SET_THP_DISABLE = 41


def apply(args: argparse.Namespace) -> None:
    """The settings the command of `args` asked for (see the module docstring)."""
    if getattr(args, "return_freed_memory", False):
        return_freed_memory()
    if getattr(args, "no_thp", False):
        disable_transparent_huge_pages()


def return_freed_memory() -> None:
    """jemalloc as Arrow's pool, giving freed memory back to the OS at once (when Arrow has not loaded
    yet and the user chose no pool; see the module docstring)."""
    if "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    import pyarrow as pa

    if pa.default_memory_pool().backend_name == "jemalloc":
        pa.jemalloc_set_decay_ms(0)


def disable_transparent_huge_pages() -> bool:
    """Turn transparent huge pages off for this process (Linux); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def thp_disabled() -> bool | None:
    """Whether THP is off for this process (`THP_enabled: 0` in /proc/self/status), None if unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("THP_enabled:"):
                    return line.split()[1] == "0"
    except OSError:
        pass
    return None
