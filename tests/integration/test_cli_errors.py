"""Errors a user can act on: one line, the exit code of its meaning, never a secret, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from icebergdo import Config, Lakehouse
from icebergdo.cli import main
from tests import servers
from tests.integration.procs import cli_args

REPO = Path(__file__).resolve().parents[2]
EVENT = json.dumps({"ts": "2026-05-01T10:00:00Z", "type": "custom", "source": "t", "payload": {"a": 1}})


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_missing_home_is_refused_except_for_init_and_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / "lakehuose"
    (tmp_path / "ev.jsonl").write_text(EVENT + "\n")
    for argv in (["tables"], ["query", "SELECT 1"], ["health"], ["maintain"], ["ingest", str(tmp_path / "ev.jsonl")], ["cdc", "show", "a", "b"]):
        code, out, err = run(capsys, "--home", str(typo), *argv)
        assert code == 2, argv
        assert err.startswith(f"icebergdo: error: no lakehouse at {typo}") and "init" in err and len(err.splitlines()) == 1
        assert not typo.exists(), f"{argv} created the typo'd lakehouse"
    assert run(capsys, "--home", str(typo), "init")[0] == 0
    assert run(capsys, "--home", str(typo), "tables")[0] == 0


def test_flags_take_sizes_and_durations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "lh")
    Lakehouse.open(home).append_events([json.loads(EVENT)])
    code, out, _ = run(capsys, "--home", home, "maintain", "--dry-run", "--target-file-size", "64MiB", "--older-than", "1h30m",
                       "--orphan-age", "3d", "--format", "json")
    assert code == 0 and {r["step"] for r in json.loads(out)} == {"compact", "manifests", "expire", "orphans"}
    code, _, err = run(capsys, "--home", home, "maintain", "--older-than", "tomorrow")
    assert code == 2 and "--older-than: cannot parse duration 'tomorrow'" in err
    code, _, err = run(capsys, "--home", home, "maintain", "--target-file-size", "12 parsecs")
    assert code == 2 and "--target-file-size: cannot parse size" in err
    cfg = tmp_path / "lake.toml"
    cfg.write_text(f'[catalog]\nhome = "{home}"\n[maintenance]\ntarget_file_size = "48MiB"\nolder_than = "2d"\n')
    code, out, err = run(capsys, "--config", str(cfg), "maintain", "--dry-run", "--format", "json")
    assert code == 0, err


def _blocked_module(tmp_path: Path, name: str) -> dict[str, str]:
    """An environment in which `import name` fails as if the package were not installed (a fault we cannot uninstall)."""
    pkg = tmp_path / "blocked" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"raise ModuleNotFoundError({'No module named ' + repr(name)!r}, name={name!r})\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocked"), str(REPO)])}


def test_missing_postgres_driver_names_the_extra(tmp_path: Path) -> None:
    cfg = tmp_path / "pg.toml"
    cfg.write_text('[catalog]\nuri = "postgresql+psycopg://icebergdo:${PGPASS:-pw}@127.0.0.1:1/icebergdo"\n'
                   f'warehouse = "{(tmp_path / "wh").as_uri()}"\n')
    env = _blocked_module(tmp_path, "psycopg")
    done = subprocess.run([sys.executable, "-m", "icebergdo", "--config", str(cfg), "tables"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 8, done.stderr
    assert done.stderr.strip().splitlines() == [
        "icebergdo: error: a PostgreSQL catalog needs the Python package 'psycopg', which is not installed: pip install 'icebergdo[postgres]'"]
    doctor = subprocess.run([sys.executable, "-m", "icebergdo", "--config", str(cfg), "doctor"], capture_output=True, text=True, env=env, timeout=120)
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr + doctor.stdout
    assert "FAIL driver: the catalog URI needs the Python package 'psycopg'" in doctor.stdout
    assert "pip install 'icebergdo[postgres]'" in doctor.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3_lake(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """A lakehouse on SeaweedFS (SQLite catalog) with one commit, to break its settings afterwards."""
    s3: servers.SeaweedFS = request.getfixturevalue("seaweedfs")
    bucket = s3.create_bucket("icebergdo-tests")
    config = Config.from_dict({"catalog": {"uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": f"s3://{bucket}/errors-{tmp_path.name.lower()}"},
                               "s3": s3.s3_settings()}, source="test")
    Lakehouse.open(config).append_events([json.loads(EVENT)])
    return config


@pytest.mark.parametrize("fault", ["wrong secret", "endpoint down"])
def test_s3_failures_are_one_line_with_the_doctor_hint(s3_lake: Config, fault: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    s3 = s3_lake.s3
    assert s3 is not None and s3.secret_access_key
    if fault == "wrong secret":
        broken = dataclasses.replace(s3, secret_access_key="Wr0ng-" + s3.secret_access_key[::-1])
        expect = "the request signature was refused"
    else:
        broken = dataclasses.replace(s3, endpoint=f"http://127.0.0.1:{_free_port()}", connect_timeout=1.0)
        expect = "cannot reach endpoint"
    base = cli_args(dataclasses.replace(s3_lake, s3=broken), tmp_path)
    (tmp_path / "ev.jsonl").write_text(EVENT + "\n")
    secrets = {s3.secret_access_key, broken.secret_access_key}
    for argv in (["ingest", "--no-wal", str(tmp_path / "ev.jsonl")], ["tables"], ["query", "SELECT count(*) FROM events"],
                 ["maintain", "--dry-run"], ["health"]):
        code, out, err = run(capsys, *base, *argv)
        assert code == 4, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("icebergdo: error: ") and "storage" in lines[0], (argv, err)
        assert expect in err and "icebergdo doctor" in err and "fix: " in err, (argv, err)
        assert not any(secret in out + err for secret in secrets if secret)
