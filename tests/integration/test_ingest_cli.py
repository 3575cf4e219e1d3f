"""`icebergdo ingest`: JSON lines in, one clear error (line + field) and nothing committed for bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from icebergdo import Config, Lakehouse
from icebergdo.cli import main


def cli_args(config: Config, tmp_path: Path) -> list[str]:
    """`--home` for the embedded backend, a TOML `--config` for s3pg."""
    if config.home is not None:
        return ["--home", str(config.home)]
    lines = ["[catalog]", f"uri = {json.dumps(config.catalog_uri)}", f"warehouse = {json.dumps(config.warehouse)}"]
    if config.s3 is not None:
        s3 = config.s3
        lines += ["[s3]", f"endpoint = {json.dumps(s3.endpoint)}", f"region = {json.dumps(s3.region)}",
                  f"access_key_id = {json.dumps(s3.access_key_id)}", f"secret_access_key = {json.dumps(s3.secret_access_key)}",
                  f"path_style = {'true' if s3.path_style else 'false'}"]
    path = tmp_path / "icebergdo.toml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return ["--config", str(path)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def good(i: int) -> str:
    return json.dumps({"ts": 1772359200000 + i * 1000, "type": "webhook", "source": "shop", "payload": {"order": i}})


def snapshot_count(lh: Lakehouse) -> int:
    return len(lh.events_table().snapshots())


def test_ingest_file_commits_and_reports(lh: Lakehouse, config: Config, tmp_path: Path, capsys) -> None:
    lines = [
        json.dumps({"id": "evt-1", "ts": "2026-03-01T10:00:00+01:00", "type": "webhook", "source": "stripe",
                    "payload": {"amount": 12.5, "tags": ["a", "b"], "nested": {"ok": True}}}),
        json.dumps({"ts": 1772359200000, "type": "rpc", "payload": "plain text"}),
        "",  # blank lines are ignored
        json.dumps({"ts": "2026-03-01 12:30:00", "type": "ws", "namespace": "app", "collection": "users", "payload": None}),
    ]
    path = write_lines(tmp_path / "events.jsonl", lines)
    assert main([*cli_args(config, tmp_path), "ingest", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ingested 3 events into events.raw" in out and "1 commit(s)" in out
    con = lh.duckdb()
    rows = con.execute("SELECT id, ts, type, source, payload FROM events ORDER BY ts").fetchall()
    assert len(rows) == 3
    assert rows[0][0] == "evt-1" and rows[0][1].isoformat().startswith("2026-03-01 09:00:00".replace(" ", "T"))
    assert json.loads(rows[0][4]) == {"amount": 12.5, "tags": ["a", "b"], "nested": {"ok": True}}
    assert con.execute("SELECT count(DISTINCT id) FROM events").fetchone()[0] == 3
    # --json output; running the same command again commits nothing (the batch id derives from the input)
    assert main([*cli_args(config, tmp_path), "ingest", str(path), "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["events"] == 3 and result["commits"] == 0 and result["already_committed_batches"] == 1
    assert result["skipped_lines"] == 0
    assert lh.duckdb().execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone() == (3, 3)


BAD_LINES = [
    ('{"type": "webhook"}', "line 2: missing required field 'ts'"),
    ('{"ts": "not a time", "type": "webhook"}', "line 2: field 'ts': cannot parse time"),
    ('[1, 2, 3]', "line 2: expected a JSON object, got list"),
    ('{"ts": 1772359200000, "type": "webhook", "payload": {"x": NaN}}', "line 2: field 'payload': not JSON-serialisable"),
    ('{"ts": 1772359200000, "type": "webhook", "colour": "red"}', "line 2: unknown field(s) 'colour'"),
    ('{"ts": 1772359200000, "type": ', "line 2: invalid JSON"),
    ('{"ts": 1772359200000, "source": "x"}', "line 2: field 'type': required"),
]


def test_bad_input_fails_clearly_and_commits_nothing(lh: Lakehouse, config: Config, tmp_path: Path, capsys) -> None:
    args = cli_args(config, tmp_path)
    for n, (bad, message) in enumerate(BAD_LINES):
        path = write_lines(tmp_path / f"bad{n}.jsonl", [good(0), bad, good(2)])
        assert main([*args, "ingest", str(path), "--no-progress"]) == 3, bad
        err = capsys.readouterr().err
        assert f"bad{n}.jsonl: {message}" in err, err
    assert snapshot_count(lh) == 0
    # A bad line 5000 commits nothing, even though it comes after several flushes' worth of events.
    path = write_lines(tmp_path / "big.jsonl", [good(i) for i in range(4999)] + ['{"ts": "soon", "type": "x"}'])
    assert main([*args, "ingest", str(path), "--max-rows", "1000", "--chunk-bytes", "20000", "--no-progress"]) == 3
    assert "big.jsonl: line 5000: field 'ts'" in capsys.readouterr().err
    assert snapshot_count(lh) == 0


def test_on_error_skip_and_unknown_fields(lh: Lakehouse, config: Config, tmp_path: Path, capsys) -> None:
    args = cli_args(config, tmp_path)
    lines = [good(0)] + [bad for bad, _ in BAD_LINES] + [good(99)]
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    assert main([*args, "ingest", str(path), "--on-error", "skip", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "ingested 2 events" in captured.out
    assert f"skipped {len(BAD_LINES)} bad line(s)" in captured.err
    assert "mixed.jsonl: line 3: field 'ts': cannot parse time" in captured.err
    extra = write_lines(tmp_path / "extra.jsonl", [json.dumps({"id": "x1", "ts": 1772359200, "type": "t", "region": "eu"})])
    assert main([*args, "ingest", str(extra), "--unknown", "payload", "--no-progress"]) == 0
    extra2 = write_lines(tmp_path / "extra2.jsonl", [json.dumps({"id": "x2", "ts": 1772359200, "type": "t", "region": "us"})])
    assert main([*args, "ingest", str(extra2), "--unknown", "keep", "--no-progress"]) == 0
    con = lh.duckdb()
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 4
    assert con.execute("SELECT payload::JSON->>'region' FROM events WHERE id = 'x1'").fetchone()[0] == "eu"
    assert con.execute("SELECT region FROM events WHERE id = 'x2'").fetchone()[0] == "us"


def test_stdin_in_a_subprocess(lh: Lakehouse, config: Config, tmp_path: Path, monkeypatch, capsys) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "icebergdo", *cli_args(config, tmp_path), "ingest", "-", "--no-progress"]
    data = "".join(good(i) + "\n" for i in range(250))
    proc = subprocess.run(cmd, input=data, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ingested 250 events" in proc.stdout
    # bad stdin, in-process this time: nothing of it is committed
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO((data + "{oops\n").encode()))))
    assert main([*cli_args(config, tmp_path), "ingest", "-", "--no-progress"]) == 3
    assert "stdin: line 251: invalid JSON" in capsys.readouterr().err
    assert lh.query("SELECT count(*) AS n FROM events").column("n").to_pylist() == [250]


@pytest.mark.parametrize("flag", ["--stream"])
def test_stream_mode_commits_as_it_goes(lh: Lakehouse, config: Config, tmp_path: Path, flag: str, capsys) -> None:
    """--stream commits valid chunks before a later bad line (documented trade-off for endless input)."""
    path = write_lines(tmp_path / "s.jsonl", [good(i) for i in range(300)] + ["[]"])
    rc = main([*cli_args(config, tmp_path), "ingest", str(path), flag, "--chunk-bytes", "4000", "--no-wal", "--no-progress"])
    assert rc == 3 and "line 301: expected a JSON object" in capsys.readouterr().err
    # every chunk before the bad line's chunk is committed: a prefix of the file, exactly once
    count, distinct, highest = lh.query("SELECT count(*), count(DISTINCT id), max(ts) FROM events").to_pylist()[0].values()
    assert 200 <= count < 300 and distinct == count
    assert int(highest.timestamp() * 1000) == 1772359200000 + (count - 1) * 1000
