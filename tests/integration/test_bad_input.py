"""Bad input never becomes a traceback: the same messages through `append_events` (dicts and Arrow),
`icebergdo ingest` and `icebergdo cdc apply`, exit code 3, nothing committed (issues 11 and 14)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from icebergdo import BadInputError, Config, Lakehouse
from icebergdo.cli import main
from tests.integration.procs import cli_args

GOOD = {"ts": "2026-03-01T10:00:00Z", "type": "webhook", "source": "stripe", "payload": {"a": 1}}
DEEP = "[" * 600 + "]" * 600
VERY_DEEP = "[" * 100_000 + "]" * 100_000

# (JSON line, message after "<label>: ", Arrow columns or None)
CASES = [
    ('{"type": "rpc"}', "missing required field 'ts'", None),
    ('{"ts": "yesterday-ish", "type": "rpc"}', "field 'ts': cannot parse time 'yesterday-ish'", {"ts": ["yesterday-ish"], "type": ["rpc"]}),
    ('{"ts": "1960-01-01T00:00:00Z", "type": "a"}', "field 'ts': 1960-01-01T00:00:00Z is before 1970-01-01", {"ts": ["1960-01-01T00:00:00Z"], "type": ["a"]}),
    ('{"ts": "2026-03-01T10:00:00Z", "type": "a", "source": "\\ud800"}', "field 'source': not valid Unicode text", None),
    ('{"ts": "2026-03-01T10:00:00Z", "type": "a", "payload": {"k": "\\ud800"}}', "field 'payload': not valid Unicode text", None),
    ('{"ts": "2026-03-01T10:00:00Z", "type": "a", "payload": ' + DEEP + "}", "field 'payload': nested deeper than 512 levels", None),
    ('{"ts": "2026-03-01T10:00:00Z", "type": "a", "payload": {"x": NaN}}', "field 'payload': not JSON-serialisable", None),
    ('{"ts": "2026-03-01T10:00:00Z", "type": ""}', "field 'type': must not be empty", {"ts": ["2026-03-01T10:00:00Z"], "type": [""]}),
    ('{"ts": "2026-03-01T10:00:00Z", "type": "a", "colour": "red"}', "unknown field(s) 'colour'", None),
]


@pytest.mark.parametrize("line, expected, arrow", CASES, ids=[c[1][:30] for c in CASES])
def test_same_message_from_the_api_arrow_and_ingest(lh: Lakehouse, config: Config, tmp_path: Path, capsys, line: str, expected: str,
                                                    arrow: dict | None) -> None:
    lh.append_events([GOOD])
    before = lh.events_table().current_snapshot().snapshot_id
    with pytest.raises(BadInputError) as api:
        lh.append_events([GOOD, json.loads(line)])
    assert str(api.value).startswith("event #2: ") and expected in str(api.value)
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    assert main([*cli_args(config, tmp_path), "ingest", str(path), "--no-progress", "--ts-after", "none"]) == 3
    err = capsys.readouterr().err
    assert f"icebergdo: error: {path}: line 2: " + str(api.value).removeprefix("event #2: ") in err, err
    if arrow is not None:
        with pytest.raises(BadInputError) as from_arrow:
            lh.append_events(pa.table({k: pa.array(v, pa.string()) for k, v in arrow.items()}))
        assert str(from_arrow.value) == "row 1: " + str(api.value).removeprefix("event #2: ")
    assert lh.events_table().current_snapshot().snapshot_id == before
    assert lh.duckdb().execute("SELECT count(*) FROM events").fetchone()[0] == 1


def test_ingest_skip_survives_what_used_to_abort_it(lh: Lakehouse, config: Config, tmp_path: Path, capsys) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps(GOOD), VERY_DEEP, '{"ts": "2026-03-01T10:00:00Z", "type": "a", "source": "\\ud800"}',
             '{"ts": 5, "type": "a"}', json.dumps({**GOOD, "type": "rpc"})]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"ts": "2026-03-01T10:00:00Z", "type": "caf\xe9"}\n')
    # non-UTF-8 is named by its line, and (being below the JSON level) fails even with skip
    assert main([*cli_args(config, tmp_path), "ingest", str(path), "--no-progress", "--on-error", "skip"]) == 3
    assert f"{path}: line 6: not UTF-8 text (invalid continuation byte" in capsys.readouterr().err
    path.write_text("\n".join(lines) + "\n")
    assert main([*cli_args(config, tmp_path), "ingest", str(path), "--no-progress", "--on-error", "skip"]) == 0
    out = capsys.readouterr()
    assert "ingested 2 events" in out.out and "skipped 3 bad line(s)" in out.err
    assert f"{path}: line 2: " in out.err and "not valid Unicode" in out.err
    assert f"{path}: line 4: field 'ts': 1970-01-01T00:00:05Z is outside the plausible window" in out.err
    assert lh.duckdb().execute("SELECT count(*) FROM events").fetchone()[0] == 2


def test_ts_units_and_the_plausibility_window_on_ingest(lh: Lakehouse, config: Config, tmp_path: Path, capsys) -> None:
    args = [*cli_args(config, tmp_path), "ingest", "--no-progress"]
    seconds = 1772359200  # 2026-03-01T10:00:00Z
    values = {"s": seconds, "ms": seconds * 1000, "us": seconds * 10**6, "ns": seconds * 10**9}
    for unit, value in values.items():
        path = tmp_path / f"{unit}.jsonl"
        path.write_text(json.dumps({"ts": value, "type": unit, "id": unit}) + "\n" + json.dumps({"ts": str(value), "type": unit, "id": unit + "-text"}) + "\n")
        assert main([*args, str(path), "--ts-unit", unit]) == 0, capsys.readouterr().err
        auto = tmp_path / f"auto-{unit}.jsonl"
        auto.write_text(json.dumps({"ts": value, "type": "auto", "id": "auto-" + unit}) + "\n")
        assert main([*args, str(auto)]) == 0
    got = dict(lh.duckdb().execute("SELECT id, epoch(ts) FROM events").fetchall())
    assert got == {k: seconds for unit in values for k in (unit, unit + "-text", "auto-" + unit)}
    # seconds read as milliseconds: January 1970 is refused, naming the line, and nothing is committed
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"ts": seconds, "type": "x"}) + "\n")
    assert main([*args, str(wrong), "--ts-unit", "ms"]) == 3
    assert f"{wrong}: line 1: field 'ts': 1970-01-21T12:19:19.200000Z is outside the plausible window" in capsys.readouterr().err
    future = tmp_path / "future.jsonl"
    future.write_text(json.dumps({"ts": "2999-01-01T00:00:00Z", "type": "x"}) + "\n")
    assert main([*args, str(future)]) == 3
    assert "at most 1d ahead of now" in capsys.readouterr().err
    assert main([*args, str(future), "--ts-ahead", "none"]) == 0  # the window is configurable
    assert lh.duckdb().execute("SELECT count(*) FROM events").fetchone()[0] == 13


def test_cdc_apply_bad_input_names_the_line(lh: Lakehouse, config: Config, tmp_path: Path, capsys) -> None:
    args = [*cli_args(config, tmp_path), "cdc", "apply", "shop", "orders"]
    ok = json.dumps({"op": "insert", "id": "o1", "ts": "2026-03-01T10:00:00Z", "status": "new"})
    cases = {
        '{"op": "insert", "id": "o2", "status": "\\ud800"}': "line 2: field 'status': not valid Unicode text",
        '{"op": "insert", "id": "o2", "deep": ' + DEEP + "}": "line 2: field 'deep': nested deeper than 512 levels",
        VERY_DEEP: "line 2: JSON nested too deeply",
        '{"op": "insert", "id": "o2", "ts": "1960-01-01T00:00:00Z"}': None,  # accepted: change ids do not come from ts
    }
    for line, expected in cases.items():
        path = tmp_path / "changes.jsonl"
        path.write_text(ok + "\n" + line + "\n")
        rc = main([*args, str(path), "--json"])
        captured = capsys.readouterr()
        if expected is None:
            assert rc == 0, captured.err
        else:
            assert rc == 3 and f"{path}: {expected}" in captured.err, captured.err
    path.write_bytes(ok.encode() + b"\n" + b'{"op": "insert", "id": "\xff"}\n')
    assert main([*args, str(path)]) == 3
    assert f"{path}: line 2: not UTF-8 text" in capsys.readouterr().err
