"""The time rule (icebergdo.times): one value and whole columns agree; units; the plausibility window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from icebergdo.errors import BadInputError
from icebergdo.times import INGEST_RULE, TimeRule, check_one, micros_of, micros_one, parse_duration, parse_ts, to_micros

T = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
US = to_micros(T)


@pytest.mark.parametrize(
    "value, unit, expected",
    [
        (1772359200, "auto", US),
        (1772359200000, "auto", US),
        (1772359200000000, "auto", US),
        (1772359200000000000, "auto", US),
        ("1772359200", "auto", US),
        (1772359200.5, "s", US + 500_000),
        (1772359200000, "ms", US),
        (1772359200, "ms", US // 1000),  # an explicit unit is obeyed even when the magnitude says otherwise
        (1772359200000000, "us", US),
        (1772359200000000999, "ns", US),
        (-1001, "ns", -2),  # nanoseconds floor to the microsecond
        ("2026-03-01T10:00:00Z", "auto", US),
        ("2026-03-01T11:00:00+01:00", "auto", US),
        ("2026-03-01 10:00:00", "auto", US),  # naive is UTC
        ("2026-03-01T10:00:00.25", "auto", US + 250_000),
        ("2026-03-01", "auto", to_micros(datetime(2026, 3, 1, tzinfo=UTC))),
        (" 2026-03-01T10:00:00Z ", "auto", US),
        (T, "auto", US),
        (T.replace(tzinfo=None), "auto", US),
    ],
)
def test_one_value_and_a_column_agree(value: object, unit: str, expected: int) -> None:
    assert micros_one(value, "ts", unit) == expected
    if not isinstance(value, datetime):
        typed = pa.array([value], pa.float64() if isinstance(value, float) else None)
        assert micros_of(typed, unit).to_pylist() == [expected]


@pytest.mark.parametrize(
    "value, message",
    [
        ("soon", "cannot parse time 'soon'"),
        ("2026-02-30T00:00:00Z", "cannot parse time"),
        (float("nan"), "is not a time"),
        (True, "expected ISO-8601 text or an epoch number, got True"),
        (None, "got None"),
        (10**30, "out of range"),
        ("99999999999999999999999", "out of range"),
        ([1], "got list"),
        ("\ud800", "not valid Unicode"),
    ],
)
def test_bad_values_name_the_field(value: object, message: str) -> None:
    with pytest.raises(BadInputError, match="line 3: field 'ts'") as err:
        micros_one(value, "line 3: field 'ts'")
    assert message in str(err.value)


def test_a_column_marks_bad_values_null_and_keeps_the_rest() -> None:
    col = pa.array(["2026-03-01T10:00:00Z", "soon", None, "1772359200000", "2026-02-30T00:00:00Z", "20260301T100000Z"])
    assert micros_of(col).to_pylist() == [US, None, None, US, None, micros_one("20260301T100000Z")]


def test_iso_forms_arrow_parses_match_python() -> None:
    samples = [f"20{y:02d}-{m:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{zone}"
               for y, m, d, h, mi, s in [(26, 3, 1, 10, 0, 0), (0, 1, 1, 0, 0, 0), (99, 12, 31, 23, 59, 59), (24, 2, 29, 12, 30, 1)]
               for sep in ("T", " ") for frac in ("", ".5", ".123456") for zone in ("", "Z", "+05:30", "-01:00")]
    got = micros_of(pa.array(samples)).to_pylist()
    assert got == [to_micros(datetime.fromisoformat(s)) for s in samples]


def test_plausibility_window() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    check_one(to_micros(now + timedelta(hours=23)), INGEST_RULE, "ts", now)
    with pytest.raises(BadInputError, match=r"line 9: field 'ts': 1970-01-21T.*outside the plausible window.*not before 2000-01-01"):
        check_one(micros_one(1772359200, unit="ms"), INGEST_RULE, "line 9: field 'ts'", now)
    with pytest.raises(BadInputError, match="at most 1d ahead of now"):
        check_one(to_micros(now + timedelta(days=2)), INGEST_RULE, "ts", now)
    check_one(0, TimeRule(), "ts", now)  # no window by default
    assert parse_ts(1772359200) == T


def test_durations() -> None:
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1.5d") == timedelta(days=1.5)
    assert parse_duration(30) == timedelta(seconds=30)
    with pytest.raises(BadInputError, match="cannot parse duration"):
        parse_duration("soon")
