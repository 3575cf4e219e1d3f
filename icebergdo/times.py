"""Event times: one rule for turning text, epoch numbers and datetimes into UTC microseconds.

The rule (docs/writer.md, "Event times"):

- ISO-8601 text; a time without a zone is UTC.
- A number, or text of digits, is a Unix epoch in `unit`: `s`, `ms`, `us`, `ns`, or `auto` (the
  default), which picks the unit per value by magnitude: |v| < 1e11 seconds, < 1e14 milliseconds,
  < 1e17 microseconds, else nanoseconds. Every unit's values for 1973..5138 fall in its band, so
  Stripe's `created` (seconds) and JavaScript's `Date.now()` (ms) both land where they should.
  Fractions are rounded to the microsecond (half to even).
- A `TimeRule` may add a plausibility window (`icebergdo ingest` uses 2000-01-01 .. now + 1 day by
  default), so a unit mistake is an error naming the line, never an event silently dated 1970.

Why one module: the same rule runs vectorised over a whole column (`micros_of`) and value by value
(`micros_one`, for error messages and odd inputs). `micros_one` runs the very same Arrow kernels
on a one-element column, so both can never disagree about a value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from icebergdo import arrays, units
from icebergdo.errors import BadInputError

TS = pa.timestamp("us", tz="UTC")
TsUnit = Literal["auto", "s", "ms", "us", "ns"]
TS_UNITS: tuple[str, ...] = ("auto", "s", "ms", "us", "ns")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_US = -62135596800 * 1_000_000  # 0001-01-01
MAX_US = 253402300799 * 1_000_000 + 999_999  # 9999-12-31T23:59:59.999999
_SCALE = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": -1_000}  # negative: divide
_AUTO_BANDS = ((1e11, "s"), (1e14, "ms"), (1e17, "us"))

# ISO-8601 forms Arrow parses exactly as `datetime.fromisoformat` does (checked by tests/unit/test_times.py);
# anything else goes value by value through Python. RE2 syntax (no look-ahead): the year is 0001-9999.
_DATE = r"([1-9]\d{3}|0[1-9]\d{2}|00[1-9]\d|000[1-9])-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?"
_ISO_ZONED = "^" + _DATE + r"(Z|[+-]\d{2}:\d{2})$"
_ISO_NAIVE = "^" + _DATE + "$"
_DIGITS = r"^-?\d{1,18}$"
_DIGITS_RE = re.compile(r"-?\d+")


@dataclass(frozen=True)
class TimeRule:
    """How numeric times are read (`unit`) and which times are plausible (`earliest`, now + `ahead`)."""

    unit: TsUnit = "auto"
    earliest: datetime | None = None
    ahead: timedelta | None = None

    def __post_init__(self) -> None:
        if self.unit not in TS_UNITS:
            raise BadInputError(f"ts unit must be one of {', '.join(TS_UNITS)}, got {self.unit!r}")

    def window(self, now: datetime | None = None) -> tuple[int | None, int | None]:
        """The plausible range in microseconds (None = open)."""
        lo = to_micros(self.earliest) if self.earliest is not None else None
        hi = to_micros((now or datetime.now(UTC)) + self.ahead) if self.ahead is not None else None
        return lo, hi

    def describe(self) -> str:
        parts = []
        if self.earliest is not None:
            parts.append(f"not before {iso(to_micros(self.earliest))}")
        if self.ahead is not None:
            parts.append(f"at most {human(self.ahead)} ahead of now")
        return " and ".join(parts)


DEFAULT_RULE = TimeRule()
INGEST_RULE = TimeRule(earliest=datetime(2000, 1, 1, tzinfo=UTC), ahead=timedelta(days=1))


def human(delta: timedelta) -> str:
    """A duration as `1d`, `12h`, `90s` (the form `parse_duration` reads)."""
    seconds = delta.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def to_micros(dt: datetime) -> int:
    """An aware (or naive = UTC) datetime as microseconds since the epoch, exactly."""
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso(micros: int) -> str:
    """Microseconds since the epoch as ISO-8601 UTC text (for messages)."""
    return (EPOCH + timedelta(microseconds=micros)).isoformat().replace("+00:00", "Z")


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


# -- whole columns ------------------------------------------------------------------------------
def _auto_scale(mag: pa.Array) -> pa.Array:
    """Per value: the epoch unit `auto` picks for magnitude `mag` (float64), as a _SCALE factor."""
    out = pa.scalar(_SCALE["ns"], pa.int64())
    for bound, unit in reversed(_AUTO_BANDS):
        out = pc.if_else(pc.less(mag, bound), pa.scalar(_SCALE[unit], pa.int64()), out)
    return out


def _epoch(values: pa.Array, unit: str) -> pa.Array:
    """int64 or float64 epoch values → int64 microseconds; null where not finite or out of range."""
    floats = values.cast(pa.float64(), safe=False)
    mag = pc.abs(floats)
    scale = _auto_scale(mag) if unit == "auto" else pa.repeat(pa.scalar(_SCALE[unit], pa.int64()), len(values))
    factor = pc.if_else(pc.less(scale, 0), pc.divide(1.0, pc.negate(scale).cast(pa.float64())), scale.cast(pa.float64()))
    approx = pc.multiply(floats, factor)
    ok = pc.and_(pc.is_finite(approx), pc.and_(pc.greater_equal(approx, float(MIN_US) - 2), pc.less_equal(approx, float(MAX_US) + 2)))
    ok = pc.fill_null(ok, False)
    if pa.types.is_integer(values.type):
        ints = pc.if_else(ok, values.cast(pa.int64()), 0)
        mult = pc.if_else(pc.less(scale, 0), 1, scale)
        div = pc.if_else(pc.less(scale, 0), pc.negate(scale), 1)
        prod = pc.multiply(ints, mult)
        q = pc.divide(prod, div)  # truncates toward zero: make it a floor, as Python's // is
        q = pc.if_else(pc.less(pc.subtract(prod, pc.multiply(q, div)), 0), pc.subtract(q, 1), q)
        micros = q
    else:
        micros = pc.round(pc.if_else(ok, approx, 0.0), round_mode="half_to_even").cast(pa.int64())
    ok = pc.and_(ok, pc.and_(pc.greater_equal(micros, MIN_US), pc.less_equal(micros, MAX_US)))
    return pc.if_else(ok, micros, pa.scalar(None, pa.int64()))


def _text(values: pa.Array, unit: str) -> pa.Array:
    """Text → microseconds: digits as epoch, the common ISO forms by Arrow, the rest value by value."""
    text = pc.utf8_trim_whitespace(values)
    out = pa.nulls(len(text), pa.int64())
    digits = pc.fill_null(pc.match_substring_regex(text, _DIGITS), False)
    if pc.any(digits).as_py():
        out = pc.if_else(digits, _epoch(pc.if_else(digits, text, "0").cast(pa.int64()), unit), out)
    done = digits
    for pattern, zoned in ((_ISO_ZONED, True), (_ISO_NAIVE, False)):
        mask = pc.fill_null(pc.match_substring_regex(text, pattern), False)
        if not pc.any(mask).as_py():
            continue
        picked = pc.if_else(mask, text, "2000-01-01T00:00:00Z" if zoned else "2000-01-01T00:00:00")
        try:
            parsed = picked.cast(TS) if zoned else pc.assume_timezone(picked.cast(pa.timestamp("us")), "UTC")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue  # e.g. 2026-02-30: leave these to Python, which names the problem
        out = pc.if_else(mask, parsed.cast(pa.int64()), out)
        done = pc.or_(done, mask)
    rest = pc.and_(pc.invert(done), pc.is_valid(text))
    if pc.any(rest).as_py():
        idx = pc.indices_nonzero(rest).to_pylist()
        fixed = out.to_pylist()
        for i in idx:
            fixed[i] = _micros_python(text[i].as_py(), unit)
        out = pa.array(fixed, pa.int64())
    return out


def micros_of(values: pa.Array | pa.ChunkedArray, unit: str = "auto") -> pa.Array:
    """A time column of any supported type → int64 microseconds; null for nulls AND for bad values.

    Callers tell the two apart with `values.is_valid()`. Supported: timestamps (naive = UTC), dates,
    integers and floats (epoch in `unit`), text (ISO-8601 or digits). Other types: all bad.
    """
    values = arrays.array(values)
    t = values.type
    if pa.types.is_null(t) or len(values) == 0:
        return pa.nulls(len(values), pa.int64())
    if pa.types.is_timestamp(t):
        aware = values if t.tz else pc.assume_timezone(values, "UTC")
        return aware.cast(TS).cast(pa.int64())
    if pa.types.is_date(t):
        return values.cast(pa.timestamp("us")).cast(pa.int64())
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return _epoch(values, unit)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _text(values.cast(pa.string()), unit)
    return pa.nulls(len(values), pa.int64())


def check_window(micros: pa.Array, rule: TimeRule, now: datetime | None = None) -> pa.Array:
    """True where a (non-null) time lies outside the rule's plausibility window."""
    lo, hi = rule.window(now)
    out = pa.repeat(pa.scalar(False), len(micros))
    if lo is not None:
        out = pc.or_(out, pc.fill_null(pc.less(micros, lo), False))
    if hi is not None:
        out = pc.or_(out, pc.fill_null(pc.greater(micros, hi), False))
    return out


# -- one value ----------------------------------------------------------------------------------
def _micros_python(text: str, unit: str) -> int | None:
    """Text the Arrow kernels did not take: long digit strings and other ISO-8601 forms."""
    if _DIGITS_RE.fullmatch(text):
        value = int(text)
        if not -(2**63) <= value < 2**63:
            return None
        return _epoch(pa.array([value], pa.int64()), unit)[0].as_py()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return to_micros(parsed)


def micros_one(value: Any, where: str = "ts", unit: str = "auto") -> int:
    """One time value → microseconds by the same rule as `micros_of`; `BadInputError` naming `where`."""
    if isinstance(value, datetime):
        return to_micros(value)
    if isinstance(value, date):
        return to_micros(datetime(value.year, value.month, value.day, tzinfo=UTC))
    if isinstance(value, bool) or value is None:
        raise BadInputError(f"{where}: expected ISO-8601 text or an epoch number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInputError(f"{where}: {value!r} is not a time")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise BadInputError(f"{where}: epoch {value!r} out of range")
    if isinstance(value, (int, float)):
        out = micros_of(pa.array([value], pa.int64() if isinstance(value, int) else pa.float64()), unit)[0].as_py()
        if out is None:
            raise BadInputError(f"{where}: epoch {value!r} out of range (unit {unit})")
        return int(out)
    if isinstance(value, str):
        try:
            arr = pa.array([value], pa.string())
        except (UnicodeEncodeError, pa.ArrowInvalid):
            raise BadInputError(f"{where}: not valid Unicode text ({value!r})") from None
        out = micros_of(arr, unit)[0].as_py()
        if out is None:
            if _DIGITS_RE.fullmatch(value.strip()):
                raise BadInputError(f"{where}: epoch {value!r} out of range (unit {unit})")
            raise BadInputError(f"{where}: cannot parse time {value!r} (use ISO-8601 or an epoch number)")
        return int(out)
    raise BadInputError(f"{where}: expected ISO-8601 text or an epoch number, got {type(value).__name__}")


def check_one(micros: int, rule: TimeRule, where: str, now: datetime | None = None) -> None:
    """Raise when `micros` lies outside the rule's plausibility window."""
    lo, hi = rule.window(now)
    if (lo is not None and micros < lo) or (hi is not None and micros > hi):
        raise BadInputError(
            f"{where}: {iso(micros)} is outside the plausible window ({rule.describe()}); "
            f"if it is an epoch number in another unit, set the ts unit (s, ms, us, ns), else widen the window"
        )


def parse_ts(value: Any, where: str = "ts", unit: str = "auto") -> datetime:
    """ISO-8601 text (naive means UTC), an epoch number (see the module doc), or a datetime → aware UTC datetime."""
    return from_micros(micros_one(value, where, unit))


def parse_duration(text: str | float | int | timedelta, what: str = "duration") -> timedelta:
    """`90s`, `15m`, `24h`, `7d`, `1h30m` (or plain seconds) → timedelta (parsed by `icebergdo.units`)."""
    if isinstance(text, timedelta):
        return text
    return timedelta(seconds=units.parse_duration(text, what))
