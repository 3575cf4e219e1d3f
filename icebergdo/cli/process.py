"""Process-wide memory settings a command may choose for the process it owns (never the library).

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

import ctypes
import sys

PR_SET_THP_DISABLE = 41


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
