"""Sizes and durations as people write them (icebergdo.units)."""

from __future__ import annotations

import pytest

from icebergdo.errors import BadInputError
from icebergdo.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0), ("4096", 4096), (4096, 4096), ("128MiB", 128 * 1024**2), ("128 MiB", 128 * 1024**2), ("128mib", 128 * 1024**2),
        ("64MB", 64_000_000), ("1G", 1024**3), ("1.5GiB", int(1.5 * 1024**3)), ("2k", 2048), ("2kB", 2000), ("3 B", 3), ("1TiB", 1024**4),
        (".5M", 512 * 1024),
    ],
)
def test_parse_size(text: object, expected: int) -> None:
    assert parse_size(text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "MiB", "12 parsecs", "-1MiB", "1e3", "1,000", "12 MiB extra", True])
def test_parse_size_rejects_with_the_flag_name(text: object) -> None:
    with pytest.raises(BadInputError, match="--max-bytes"):
        parse_size(text, where="--max-bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", 5.0), (5, 5.0), ("2.5", 2.5), ("500ms", 0.5), ("5s", 5.0), ("30m", 1800.0), ("5min", 300.0), ("12h", 43200.0),
        ("90d", 90 * 86400.0), ("1w", 7 * 86400.0), ("1h30m", 5400.0), ("1h 30m", 5400.0), ("0s", 0.0), ("1.5h", 5400.0), ("2H", 7200.0),
    ],
)
def test_parse_duration(text: object, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "tomorrow", "5 parsecs", "1h30", "h", "-5s", "5s5", False])
def test_parse_duration_rejects_with_the_key_name(text: object) -> None:
    with pytest.raises(BadInputError, match=r"\[maintenance\] older_than"):
        parse_duration(text, where="[maintenance] older_than")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1843, "1.8 KiB"), (3 * 1024**2, "3.0 MiB"), (5 * 1024**3, "5.0 GiB"), (None, "")],
)
def test_format_size(n: int | None, text: str) -> None:
    assert format_size(n) == text


def test_format_size_reads_back() -> None:
    for n in (1, 1024, 10**6, 123_456_789, 5 * 1024**4):
        assert parse_size(format_size(n).replace(" ", "")) == pytest.approx(n, rel=0.05)


@pytest.mark.parametrize(
    ("s", "text"),
    [(0.35, "350ms"), (4.2, "4.2s"), (60, "1m"), (200, "3m20s"), (3600, "1h"), (7500, "2h05m"), (3 * 86400, "3d"), (3 * 86400 + 4 * 3600, "3d04h"), (None, "")],
)
def test_format_duration(s: float | None, text: str) -> None:
    assert format_duration(s) == text


def test_format_duration_reads_back() -> None:
    for s in (0.35, 4.0, 200, 7500, 3 * 86400 + 4 * 3600):
        assert parse_duration(format_duration(s)) == pytest.approx(s, rel=0.02)
