"""Sizes and durations as people write them: `128MiB`, `1.5 GB`, `500ms`, `1h30m`, `7d`.

Every size or duration a user gives — a command-line flag, a config key — goes through
`parse_size` / `parse_duration`, so `--max-bytes 128MiB`, `[maintenance] target_file_size = "64MiB"`
and `--every 15m` all mean what they say, and a typo is an error that names the flag or key
instead of a silent default. The display side (`format_size`, `format_duration`) uses the same
units, so what we print can be pasted back.

Sizes: a bare number is bytes. `KiB MiB GiB TiB` and the single letters `K M G T` are powers of
1024 (as in `dd` and systemd); `kB MB GB TB` are powers of 1000. Case does not matter.
Durations: a bare number is seconds; `ms s m (min) h d w` can be combined (`1h30m`).
"""

from __future__ import annotations

import math
import re

from icebergdo.errors import BadInputError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|min|s|m|h|d|w)", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_size(value: str | int | float, where: str = "size") -> int:
    """`128MiB`, `64 MB`, `1.5G`, `4096` (bytes) → bytes. `where` names the flag or key in the error."""
    if isinstance(value, bool):
        raise BadInputError(f"{where}: expected a size such as 128MiB, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        m = _SIZE.match(str(value))
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise BadInputError(f"{where}: cannot parse size {value!r} (use e.g. 128MiB, 64MB, 1GiB, or bytes)")
        number, unit = float(m.group(1)), m.group(2).lower()
    if not math.isfinite(number) or number < 0:
        raise BadInputError(f"{where}: a size cannot be negative, got {value!r}")
    return int(round(number * _SIZE_UNITS[unit]))


def parse_duration(value: str | int | float, where: str = "duration") -> float:
    """`90d`, `12h`, `1h30m`, `45s`, `500ms`, `1w`, or a bare number of seconds → seconds."""
    if isinstance(value, bool):
        raise BadInputError(f"{where}: expected a duration such as 5s or 1h, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        if _NUMBER.match(text):
            seconds = float(text)
        else:
            parts = list(_DURATION_PART.finditer(text))
            rebuilt = "".join(m.group(0) for m in parts)
            if not parts or rebuilt.replace(" ", "") != text.replace(" ", ""):
                raise BadInputError(f"{where}: cannot parse duration {value!r} (use e.g. 500ms, 45s, 30m, 12h, 90d, 1w, 1h30m)")
            seconds = sum(float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()] for m in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise BadInputError(f"{where}: a duration cannot be negative, got {value!r}")
    return seconds


def format_size(n: float | None) -> str:
    """Bytes for people: `512 B`, `1.8 KiB`, `2.9 MiB`, `1.2 GiB` (powers of 1024, as `parse_size` reads them)."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover - the loop returns at TiB


def format_duration(seconds: float | None) -> str:
    """Seconds for people: `350ms`, `4.2s`, `3m20s`, `2h05m`, `3d` (readable back by `parse_duration`)."""
    if seconds is None:
        return ""
    s = float(seconds)
    sign = "-" if s < 0 else ""
    s = abs(s)
    if s < 1:
        return f"{sign}{s * 1000:.0f}ms"
    if s < 60:
        return f"{sign}{s:.1f}s"
    total = int(round(s))
    for big, small, name_big, name_small in ((86400, 3600, "d", "h"), (3600, 60, "h", "m"), (60, 1, "m", "s")):
        if total >= big:
            rest = total % big // small
            return f"{sign}{total // big}{name_big}" + (f"{rest:02d}{name_small}" if rest else "")
    return f"{sign}{total}s"  # pragma: no cover - s >= 60 here
