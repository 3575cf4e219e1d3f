"""One output layer: the same query in every format, --limit, broken pipes, tables/cdc formats."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from icebergdo import Config, Lakehouse
from icebergdo.cli import main
from tests.integration.procs import cli_args

SQL = "SELECT id, ts, type, source, payload FROM events ORDER BY ts"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def events(n: int) -> list[dict]:
    return [{"ts": f"2026-05-01T1{i % 3}:0{i % 6}:00.{i:03d}Z", "type": "webhook", "source": "stripe",
             "payload": {"event": "invoice.paid", "amount": i * 100, "lines": [{"sku": f"S{i}", "qty": i}], "note": "ü, \"quoted\""}}
            for i in range(n)]


def test_the_same_query_in_every_format(lh: Lakehouse, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lh.append_events(events(5))
    expected = lh.query(SQL).to_pylist()  # DuckDB, read independently of the CLI
    base = cli_args(config, tmp_path)
    outs = {}
    for fmt in ("table", "json", "jsonl", "csv"):
        code, outs[fmt], err = run(capsys, *base, "query", SQL, "--format", fmt)
        assert code == 0 and err == ""
    as_json = json.loads(outs["json"])
    as_jsonl = [json.loads(line) for line in outs["jsonl"].splitlines()]
    as_csv = list(csv.DictReader(io.StringIO(outs["csv"])))
    assert as_json == as_jsonl and len(as_json) == len(as_csv) == 5
    for want, j, c in zip(expected, as_json, as_csv, strict=True):
        assert list(j) == ["id", "ts", "type", "source", "payload"]  # stable keys, in the query's order
        assert j["id"] == want["id"] == c["id"]
        assert datetime.fromisoformat(j["ts"]) == want["ts"] == datetime.fromisoformat(c["ts"])
        assert j["ts"].endswith("+00:00")
        assert j["payload"] == json.loads(want["payload"]) == json.loads(c["payload"])  # real JSON
    table = outs["table"].splitlines()
    assert table[0].split() == ["id", "ts", "type", "source", "payload"] and table[-1] == "(5 rows)"
    assert expected[0]["id"] in table[2] and expected[0]["ts"].strftime("%Y-%m-%d %H:%M:%S") in table[2]


def test_limit_and_empty_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "lh")
    Lakehouse.open(home).append_events(events(7))
    code, out, _ = run(capsys, "--home", home, "query", SQL, "--limit", "3", "--format", "json")
    assert code == 0 and len(json.loads(out)) == 3
    code, out, _ = run(capsys, "--home", home, "query", SQL, "--limit", "3")
    assert out.splitlines()[-1] == "(first 3 rows; --limit 0 for all)" and len(out.splitlines()) == 2 + 3 + 1
    code, out, _ = run(capsys, "--home", home, "query", SQL, "--limit", "7")
    assert out.splitlines()[-1] == "(7 rows)"
    code, out, _ = run(capsys, "--home", home, "query", "SELECT 1 AS a WHERE false", "--format", "json")
    assert json.loads(out) == []
    code, out, _ = run(capsys, "--home", home, "query", "SELECT 1 AS a WHERE false", "--format", "csv")
    assert out == "a\n"
    assert run(capsys, "--home", home, "query", SQL, "--limit", "-1")[0] == 2


def test_csv_into_head_ends_quietly(tmp_path: Path) -> None:
    home = tmp_path / "lh"
    Lakehouse.open(home).events_table()
    cli = [sys.executable, "-m", "icebergdo", "--home", str(home), "query", "SELECT * FROM range(500000)", "--format", "csv"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    producer = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert producer.stdout is not None
    first = producer.stdout.readline()
    producer.stdout.close()  # what `| head -1` does
    err = producer.stderr.read().decode() if producer.stderr else ""
    assert producer.wait(timeout=60) == 141
    assert first == b"range\n" and err == ""  # no BrokenPipeError traceback, no message


def test_tables_and_version_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "lh")
    Lakehouse.open(home).append_events(events(3))
    code, out, _ = run(capsys, "--home", home, "tables", "--format", "jsonl")
    (row,) = [json.loads(line) for line in out.splitlines()][:1]
    assert list(row) == ["table", "rows", "snapshot_id", "metadata_location"] and row["rows"] == 3
    code, out, _ = run(capsys, "--home", home, "tables", "--json")
    assert json.loads(out)[0] == row
    code, out, _ = run(capsys, "--home", home, "tables", "--format", "csv")
    assert list(csv.DictReader(io.StringIO(out)))[0]["metadata_location"] == row["metadata_location"]
    version = subprocess.run([sys.executable, "-m", "icebergdo", "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("icebergdo 0.1.0 (pyiceberg 0.12.0")


def test_cdc_show_formats_and_missing_collection(lh: Lakehouse, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lh.collection("shop", "orders", key=["id"]).apply(
        [{"op": "insert", "ts": "2026-05-01T10:00:00Z", "id": f"o{i}", "status": "new", "total": i} for i in range(4)])
    base = cli_args(config, tmp_path)
    code, out, _ = run(capsys, *base, "cdc", "show", "shop", "orders", "--format", "json", "--limit", "3")
    rows = json.loads(out)
    assert code == 0 and [r["id"] for r in rows] == ["o0", "o1", "o2"] and rows[1]["total"] == 1
    code, out, _ = run(capsys, *base, "cdc", "show", "shop", "orders", "--limit", "2")
    assert "(showing 2 of 4; --limit 0 for all)" in out
    code, out, _ = run(capsys, *base, "cdc", "changes", "shop", "orders", "--format", "jsonl")
    assert code == 0 and len(out.splitlines()) == 4
    code, out, err = run(capsys, *base, "cdc", "show", "shop", "nope")
    assert code == 7 and out == "" and "no collection shop/nope" in err
    assert run(capsys, *base, "cdc", "changes", "shop", "nope")[0] == 7
