"""One output layer for every command (icebergdo.cli.output / args) and the lazy command table."""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from icebergdo.cli import COMMANDS, build_parser, command_of
from icebergdo.cli import args as cli_args
from icebergdo.cli.output import BYTES, NUMBER, SECONDS, TIME, Column, emit, emit_dicts, emit_record, human, plain, render

REPO = Path(__file__).resolve().parents[2]
TS = datetime(2026, 5, 1, 13, 0, 5, 123000, tzinfo=UTC)
SPEC = [Column("id"), Column("ts"), Column("payload", "json"), Column("size", BYTES), Column("took", SECONDS), Column("n", NUMBER)]
ROWS = [
    ["a", TS, '{"event": "invoice.paid", "amount": 12}', 3 * 1024**2, 200.0, 1234],
    ["b,\"quoted\"", None, "not json", 0, None, None],
]


def test_json_has_iso_times_real_payload_and_stable_keys() -> None:
    got = json.loads(render(SPEC, ROWS, "json"))
    assert [list(r) for r in got] == [[c.name for c in SPEC]] * 2
    assert got[0]["ts"] == "2026-05-01T13:00:05.123000+00:00"
    assert datetime.fromisoformat(got[0]["ts"]) == TS
    assert got[0]["payload"] == {"event": "invoice.paid", "amount": 12}  # real JSON, not a string of JSON
    assert got[1]["payload"] == "not json" and got[1]["ts"] is None
    assert got[0]["size"] == 3 * 1024**2 and got[0]["took"] == 200.0  # machine units: bytes, seconds
    assert render(SPEC, [], "json").strip() == "[]"


def test_jsonl_is_one_object_per_line_with_the_same_values_as_json() -> None:
    lines = render(SPEC, ROWS, "jsonl").splitlines()
    assert [json.loads(x) for x in lines] == json.loads(render(SPEC, ROWS, "json"))


def test_csv_round_trips_with_the_same_values() -> None:
    rows = list(csv.reader(io.StringIO(render(SPEC, ROWS, "csv"))))
    assert rows[0] == [c.name for c in SPEC]
    assert rows[1][:4] == ["a", "2026-05-01T13:00:05.123000+00:00", '{"event":"invoice.paid","amount":12}', str(3 * 1024**2)]
    assert rows[2][0] == 'b,"quoted"' and rows[2][1] == "" and rows[2][2] == "not json"


def test_table_is_human_and_counts_rows() -> None:
    text = render(SPEC, ROWS, "table")
    lines = text.splitlines()
    assert lines[0].split() == ["id", "ts", "payload", "size", "took", "n"]
    assert set(lines[1]) == {"-"}
    assert "2026-05-01 13:00:05.123Z" in lines[2] and "3.0 MiB" in lines[2] and "3m20s" in lines[2] and "1,234" in lines[2]
    assert lines[-1] == "(2 rows)"
    assert all(line == line.rstrip() for line in lines)
    out = io.StringIO()
    emit(SPEC, [], "table", out=out, empty="nothing here")
    assert out.getvalue() == "nothing here\n"


def test_plain_values() -> None:
    assert plain(Decimal("2.50")) == 2.5 and plain(Decimal("3")) == 3
    assert plain(date(2026, 1, 2)) == "2026-01-02"
    assert plain(timedelta(minutes=2)) == 120.0
    assert plain(float("nan")) is None
    assert plain(b"\x00\x01") == "AAE="
    assert plain({"a": [TS]}) == {"a": ["2026-05-01T13:00:05.123000+00:00"]}
    assert plain(datetime(2026, 1, 1, 12, tzinfo=UTC).astimezone()) == "2026-01-01T12:00:00+00:00"  # normalised to UTC
    assert human(1_700_000_000, TIME) == "2023-11-14 22:13:20Z"
    assert human(True) == "true" and human(None) == ""


def test_emit_dicts_and_record() -> None:
    out = io.StringIO()
    emit_dicts(["b", "a"], [{"a": 1, "b": 2, "c": 3}], "jsonl", out=out)
    assert out.getvalue() == '{"b":2,"a":1}\n'
    for fmt, check in (("json", lambda t: json.loads(t) == {"x": 1, "when": "2026-05-01T13:00:05.123000+00:00"}),
                       ("jsonl", lambda t: json.loads(t) == {"x": 1, "when": "2026-05-01T13:00:05.123000+00:00"}),
                       ("csv", lambda t: t.splitlines() == ["x,when", "1,2026-05-01T13:00:05.123000+00:00"]),
                       ("table", lambda t: t == "did x\n")):
        out = io.StringIO()
        emit_record({"x": 1, "when": TS}, fmt, "did x", out=out)
        assert check(out.getvalue()), (fmt, out.getvalue())


def test_size_and_duration_flags_name_the_flag() -> None:
    p = argparse.ArgumentParser(exit_on_error=False)
    p.add_argument("--max-bytes", type=cli_args.size(minimum=1))
    p.add_argument("--every", type=cli_args.duration(positive=True))
    assert p.parse_args(["--max-bytes", "128MiB", "--every", "1h30m"]) == argparse.Namespace(max_bytes=128 * 1024**2, every=5400.0)
    with pytest.raises(argparse.ArgumentError, match="--max-bytes.*cannot parse size '12 parsecs'"):
        p.parse_args(["--max-bytes", "12 parsecs"])
    with pytest.raises(argparse.ArgumentError, match="--every.*more than 0"):
        p.parse_args(["--every", "0s"])


def test_command_table_matches_what_the_modules_register() -> None:
    parser = build_parser("*")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert set(sub.choices) == set(COMMANDS)
    for name, (_module, text) in COMMANDS.items():
        assert helps[name] == text, name
        assert "_rest" not in {a.dest for a in sub.choices[name]._actions}, f"{name} is still a placeholder"


@pytest.mark.parametrize(
    ("argv", "command"),
    [(["tables"], "tables"), (["--home", "query", "query", "x"], "query"), (["-v", "--config", "f.toml", "health", "--json"], "health"),
     (["--version"], None), ([], None), (["--home=x", "demo"], "demo")],
)
def test_command_of(argv: list[str], command: str | None) -> None:
    assert command_of(argv) == command


def test_help_and_version_import_nothing_heavy() -> None:
    code = ("import sys; from icebergdo.cli import main\n"
            "for argv in (['--help'], ['--version'], ['query', '--help']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "print('HEAVY', sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in "
            "('pyiceberg', 'pyarrow', 'duckdb', 'sqlalchemy', 'boto3', 'rich', 'plotly')}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "icebergdo 0.1.0 (pyiceberg" in out and "usage: icebergdo" in out and "--limit N" in out
    assert out.strip().splitlines()[-1] == "HEAVY []"
