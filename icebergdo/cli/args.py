"""Flags that mean the same in every command: `--format`, `--json`, `--limit`, `--quiet`, sizes, durations.

A command adds them with these helpers instead of declaring its own, so `--format json` is the
same JSON everywhere (see `icebergdo.cli.output`) and `--max-bytes 128MiB` / `--every 15m` are
parsed by `icebergdo.units` with the flag's name in the error.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from icebergdo.errors import BadInputError

FORMATS = ("table", "json", "jsonl", "csv")


def add_format(parser: argparse.ArgumentParser, *, formats: Sequence[str] = FORMATS, default: str = "table") -> None:
    """`--format table|json|jsonl|csv` (and `--json`, short for `--format json`)."""
    parser.add_argument(
        "--format",
        choices=list(formats),
        default=default,
        help="table: aligned for people (human sizes and durations); json: one array of objects (ISO-8601 times, "
        "payload as JSON); jsonl: one object per line; csv: header + rows (default: %(default)s)",
    )
    parser.add_argument("--json", dest="format", action="store_const", const="json", help="short for --format json")


def add_limit(parser: argparse.ArgumentParser, *, default: int | None = None) -> None:
    """`--limit N`: print at most N rows (0 = all)."""
    text = "all" if not default else str(default)
    parser.add_argument("--limit", type=count(minimum=0), default=default or 0, metavar="N", help=f"print at most N rows (0 = all; default: {text})")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """`-q/--quiet`: no progress and no plan, only the result (and errors)."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output; print only the result and errors")


def _argtype(name: str, parse: Callable[[str], object]) -> Callable[[str], object]:
    def convert(text: str) -> object:
        try:
            return parse(text)
        except BadInputError as e:
            raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None

    convert.__name__ = name
    return convert


def size(*, minimum: int = 0) -> Callable[[str], int]:
    """argparse type: `128MiB`, `64MB`, `1G`, or bytes (see `icebergdo.units.parse_size`)."""
    from icebergdo.units import parse_size

    def parse(text: str) -> int:
        n = parse_size(text)
        if n < minimum:
            raise BadInputError(f"size: must be at least {minimum} bytes, got {text!r}")
        return n

    return _argtype("size", parse)  # type: ignore[return-value]


def duration(*, minimum: float = 0.0, positive: bool = False) -> Callable[[str], float]:
    """argparse type: `500ms`, `5s`, `15m`, `1h30m`, `7d`, or seconds (see `icebergdo.units.parse_duration`)."""
    from icebergdo.units import parse_duration

    def parse(text: str) -> float:
        s = parse_duration(text)
        if s < minimum or (positive and s <= 0):
            raise BadInputError(f"duration: must be {'more than 0' if positive else f'at least {minimum}s'}, got {text!r}")
        return s

    return _argtype("duration", parse)  # type: ignore[return-value]


def count(*, minimum: int = 0) -> Callable[[str], int]:
    """argparse type: a whole number >= `minimum`."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise BadInputError(f"count: expected a whole number, got {text!r}") from None
        if n < minimum:
            raise BadInputError(f"count: must be at least {minimum}, got {text!r}")
        return n

    return _argtype("count", parse)  # type: ignore[return-value]
