"""Every row a command prints goes through here: one meaning of `--format` for every command.

- `table`: for people. Aligned columns (rich), sizes and durations in human units (`2.9 MiB`,
  `3m20s`), times in UTC. On a terminal each row stays on one line (long cells are cut with …);
  into a pipe or a log nothing is cut.
- `json`: one array of objects (one object per line), keys in the command's column order (the same keys every run, also
  for an empty result), ISO-8601 times (`2026-05-01T13:00:05.123000+00:00`), sizes in bytes and
  durations in seconds, `payload` (and DuckDB `JSON` columns) as real JSON, not a string of JSON.
- `jsonl`: the same objects, one per line, written as they come (for `jq` and streaming).
- `csv`: a header and one line per row; the same values as JSON, nested values as JSON text.

A single result (what `cdc apply` did) is one object in `json`/`jsonl`, a one-row `csv`, and a
sentence in `table` (`emit_record`). Writing to a closed pipe (`| head`) is handled in `main`.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import IO, Any
from uuid import UUID

from icebergdo.units import format_duration, format_size

# Column kinds: how a value is shown in `table` (machine formats always get the plain value).
TEXT, NUMBER, BYTES, SECONDS, TIME, JSON = "text", "number", "bytes", "seconds", "time", "json"
JSON_COLUMNS = frozenset({"payload"})  # string columns that hold JSON text


@dataclass(frozen=True)
class Column:
    """An output column: its key (also the JSON key and CSV header) and how `table` shows it."""

    name: str
    kind: str = TEXT
    header: str | None = None  # table header when it differs from the key

    @property
    def title(self) -> str:
        return self.header or self.name


def columns(spec: Iterable[str | Column]) -> list[Column]:
    return [c if isinstance(c, Column) else Column(c, JSON if c in JSON_COLUMNS else TEXT) for c in spec]


# -- values -------------------------------------------------------------------------------------
def plain(value: Any, kind: str = TEXT) -> Any:
    """The JSON value of `value`: ISO times, numbers, real JSON for JSON text; None stays None."""
    if value is None:
        return None
    if kind == JSON and isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return value if isinstance(value, str) else base64.b64encode(value).decode()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    return str(value)


def human(value: Any, kind: str = TEXT) -> str:
    """The `table` cell for `value`."""
    if value is None:
        return ""
    if kind == BYTES and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_size(value)
    if kind == SECONDS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_duration(value)
    if kind == TIME and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        if value.tzinfo:
            value = value.astimezone(UTC)
        text = value.isoformat(sep=" ", timespec="seconds" if not value.microsecond else "milliseconds")
        return text.replace("+00:00", "Z")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e15 else str(value)
    if isinstance(value, int):
        return f"{value:,}" if kind in (NUMBER, BYTES, SECONDS) else str(value)
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(plain(value), ensure_ascii=False, separators=(",", ":"))
    if kind == JSON and isinstance(value, str):
        return value
    return str(plain(value) if not isinstance(value, str) else value)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# -- emitting -----------------------------------------------------------------------------------
def emit(
    spec: Sequence[str | Column],
    rows: Iterable[Sequence[Any]],
    fmt: str,
    *,
    out: IO[str] | None = None,
    empty: str | None = None,
    footer: str | None = None,
    count: bool = True,
) -> int:
    """Print `rows` (sequences in `spec` order) as `fmt`; returns how many rows were printed.

    `empty` is what `table` prints instead of an empty table; `footer` a line after the table
    (only in `table`: machine formats carry nothing but the rows).
    """
    cols = columns(spec)
    out = out or sys.stdout
    n = 0
    if fmt == "table":
        body = [list(r) for r in rows]
        if not body and empty is not None:
            print(empty, file=out)
            return 0
        print_table(cols, body, out=out, count=count)
        if footer:
            print(footer, file=out)
        return len(body)
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow([c.name for c in cols])
        for r in rows:
            w.writerow([_csv_cell(plain(v, c.kind)) for c, v in zip(cols, r, strict=False)])
            n += 1
        return n
    if fmt == "jsonl":
        for r in rows:
            out.write(_dumps({c.name: plain(v, c.kind) for c, v in zip(cols, r, strict=False)}) + "\n")
            n += 1
        return n
    if fmt == "json":
        out.write("[")
        for r in rows:
            obj = json.dumps({c.name: plain(v, c.kind) for c, v in zip(cols, r, strict=False)}, ensure_ascii=False, allow_nan=False)
            out.write(("," if n else "") + "\n  " + obj)
            n += 1
        out.write("\n]\n" if n else "]\n")
        return n
    raise ValueError(f"unknown output format {fmt!r}")


def emit_dicts(spec: Sequence[str | Column], records: Iterable[Mapping[str, Any]], fmt: str, **kw: Any) -> int:
    """`emit` for dicts: the keys of `spec` in order (a missing key is null)."""
    cols = columns(spec)
    return emit(cols, ([r.get(c.name) for c in cols] for r in records), fmt, **kw)


def emit_record(record: Mapping[str, Any], fmt: str, text: str | Callable[[], str], *, out: IO[str] | None = None) -> None:
    """One result: `text` (a sentence) in `table`, one object in `json`/`jsonl`, one row in `csv`."""
    out = out or sys.stdout
    if fmt == "table":
        print(text() if callable(text) else text, file=out)
    elif fmt == "json":
        print(json.dumps({k: plain(v) for k, v in record.items()}, ensure_ascii=False, indent=2, allow_nan=False), file=out)
    else:
        emit(list(record), [list(record.values())], fmt, out=out)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _dumps(value)
    return value


_ASCII_HEAD: Any = None  # a rich Box with a dashed header rule, built on first use (rich loads lazily)
_ASCII_HEAD_LINES = "    \n    \n -- \n    \n    \n    \n    \n    \n"


def print_table(cols: Sequence[Column], rows: Sequence[Sequence[Any]], *, out: IO[str] | None = None, count: bool = True) -> None:
    """Aligned columns via rich; one line per row on a terminal, nothing cut in a pipe."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    global _ASCII_HEAD
    if _ASCII_HEAD is None:
        _ASCII_HEAD = box.Box(_ASCII_HEAD_LINES)

    out = out or sys.stdout
    terminal = out.isatty()
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, width=None if terminal else 100_000, color_system="auto" if terminal else None,
                      highlight=False, soft_wrap=False, emoji=False, markup=False)
    if terminal:
        import shutil

        console.size = shutil.get_terminal_size()  # the real terminal's, not the buffer's
    table = Table(box=box.SIMPLE_HEAD if terminal else _ASCII_HEAD, show_edge=False, pad_edge=False, header_style="bold" if terminal else "")
    for c in cols:
        right = c.kind in (NUMBER, BYTES, SECONDS)
        table.add_column(c.title, justify="right" if right else "left", no_wrap=True, overflow="ellipsis" if terminal else "ignore")
    for r in rows:
        table.add_row(*[human(v, c.kind) for c, v in zip(cols, r, strict=False)])
    console.print(table)
    out.write("".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines()))
    if count:
        print(f"({len(rows):,} row{'s' if len(rows) != 1 else ''})", file=out)


def render(spec: Sequence[str | Column], rows: Iterable[Sequence[Any]], fmt: str) -> str:
    """What `emit` would print, as a string (tests, `--output FILE`)."""
    buf = io.StringIO()
    emit(spec, rows, fmt, out=buf)
    return buf.getvalue()
