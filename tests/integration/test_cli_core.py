"""The core CLI: init, tables --json, query formats, demo, --help, errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from icebergdo.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_then_tables_and_query(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "lh")
    code, out, _ = run(capsys, "--home", home, "demo", "--events", "3000", "--day", "2026-05-01")
    assert code == 0
    assert "ingested 3,000 events" in out and "2026-05-01 13:00" in out and "/events/2026/05/01/" in out
    code, out, _ = run(capsys, "--home", home, "tables", "--json")
    listed = {t["table"]: t for t in json.loads(out)}
    assert listed["events.raw"]["rows"] == 3000
    assert listed["events.raw"]["metadata_location"].endswith(".metadata.json")
    assert isinstance(listed["events.raw"]["snapshot_id"], int)
    code, out, _ = run(capsys, "--home", home, "query", "SELECT count(*) AS n, count(DISTINCT id) AS d FROM events", "--format", "json")
    assert json.loads(out) == [{"n": 3000, "d": 3000}]
    code, out, _ = run(capsys, "--home", home, "query", "SELECT type, count(*) AS n FROM events.raw GROUP BY 1 ORDER BY 1", "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["type", "n"] and sum(int(r[1]) for r in rows[1:]) == 3000
    code, out, _ = run(capsys, "--home", home, "query", "SELECT 41 + 1 AS answer")
    assert "answer" in out and "42" in out


def test_init_creates_events_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--home", str(tmp_path / "lh"), "init")
    assert code == 0 and "events.raw ready" in out
    code, out, _ = run(capsys, "--home", str(tmp_path / "lh"), "tables", "--json")
    assert json.loads(out)[0]["rows"] == 0


def test_query_error_is_one_line_and_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--home", str(tmp_path / "lh"), "init")[0] == 0
    code, _, err = run(capsys, "--home", str(tmp_path / "lh"), "query", "SELEC nonsense")
    assert code == 3 and err.startswith("icebergdo: error: query failed") and len(err.strip().splitlines()) == 1


def test_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "icebergdo", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("init", "ingest", "tables", "query", "demo", "maintain", "health", "cdc", "doctor", "dev", "spark-sql"):
        assert cmd in out


def test_maintain_runs_without_transparent_huge_pages_and_queries_keep_them(lh, config, tmp_path: Path) -> None:  # noqa: ANN001
    """`maintain` (and `serve`) turn THP off for their own process (icebergdo/cli/process.py); other
    commands leave the process as it was. Read back from the kernel (/proc/self/status)."""
    from icebergdo.cli.process import thp_disabled
    from tests.integration import procs
    from tests.integration.procs import cli_args

    assert thp_disabled() is not None  # the kernel shows the flag (Linux >= 4.18)
    lh.append_events([{"ts": "2026-03-01T10:00:00Z", "type": "webhook"}])
    # Each child starts with THP on: the flag is inherited, and this test process may have run an
    # in-process `main(["maintain", ...])` of another test already.
    seen = {
        command[0]: procs.cli_in_child([*cli_args(config, tmp_path), *command], "__import__('icebergdo.cli.process').cli.process.thp_disabled()",
                                       before="import ctypes; ctypes.CDLL(None).prctl(41, 0, 0, 0, 0)")
        for command in (["maintain", "--expire", "--quiet"], ["tables"])
    }
    assert seen == {"maintain": True, "tables": False}
