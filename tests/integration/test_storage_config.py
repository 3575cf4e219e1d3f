"""Configs against real servers: `icebergdo init` bucket checks, `icebergdo doctor` diagnoses, `dev s3`, and a
PostgreSQL password made of every special character. (Parsing the configs: tests/unit/test_config.py.)"""

from __future__ import annotations

import json
import logging
import os
import random
import traceback
from pathlib import Path
from urllib.parse import quote

import pytest

from icebergdo.cli import main
from icebergdo.config import Config
from icebergdo.dev import checks as storage
from icebergdo.dev import s3dev
from tests import servers


def _s3_config(seaweedfs: servers.SeaweedFS, tmp_path: Path, bucket: str, **s3: object) -> Path:
    """A TOML config file for a SeaweedFS warehouse with a SQLite catalog; `s3` overrides [s3] keys."""
    settings = {**seaweedfs.s3_settings(), **s3}
    lines = ["[catalog]", f'uri = "sqlite:///{tmp_path}/catalog.db"', f'warehouse = "s3://{bucket}/lake"', "", "[s3]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path = tmp_path / "icebergdo.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_init_creates_missing_bucket_and_checks_permissions(seaweedfs: servers.SeaweedFS, tmp_path: Path) -> None:
    bucket = s3dev.bucket_name(f"init-{tmp_path.name}")
    config = Config.from_file(_s3_config(seaweedfs, tmp_path, bucket))
    results = storage.init_warehouse(config)
    assert [r.name for r in results] == [
        "bucket", "permission write", "permission read", "permission list", "permission delete", "clock",
    ]
    assert all(r.ok for r in results), results
    assert "created" in results[0].detail
    client = seaweedfs.client()
    assert client.list_objects_v2(Bucket=bucket, Prefix="lake/_icebergdo/").get("KeyCount", 0) == 0  # probe removed
    again = storage.init_warehouse(config)
    assert again[0].ok and "exists" in again[0].detail


def test_cli_init_on_s3_creates_bucket_and_events_table(seaweedfs: servers.SeaweedFS, tmp_path: Path, capsys) -> None:
    bucket = s3dev.bucket_name(f"cli-init-{tmp_path.name}")
    path = _s3_config(seaweedfs, tmp_path, bucket)
    assert main(["--config", str(path), "init"]) == 0
    out = capsys.readouterr().out
    assert "bucket" in out and "events.raw" in out and seaweedfs.secret_access_key not in out
    assert seaweedfs.client().list_objects_v2(Bucket=bucket, Prefix="lake/catalog/events.raw/metadata/")["KeyCount"] >= 1


def test_doctor_wrong_secret_key(seaweedfs: servers.SeaweedFS, tmp_path: Path, capsys) -> None:
    bucket = seaweedfs.create_bucket(f"doc-key-{tmp_path.name}")
    path = _s3_config(seaweedfs, tmp_path, bucket, secret_access_key="not-the-right-secret-123")
    assert main(["--config", str(path), "doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL bucket: the request signature was refused" in out
    assert "wrong secret_access_key" in out
    assert "not-the-right-secret-123" not in out and seaweedfs.secret_access_key not in out


def test_doctor_unknown_access_key(seaweedfs: servers.SeaweedFS, tmp_path: Path, capsys) -> None:
    bucket = seaweedfs.create_bucket(f"doc-id-{tmp_path.name}")
    path = _s3_config(seaweedfs, tmp_path, bucket, access_key_id="nobody-knows-me")
    assert main(["--config", str(path), "doctor"]) == 1
    out = capsys.readouterr().out
    assert "is not known" in out and "wrong access_key_id" in out


def test_doctor_missing_bucket(seaweedfs: servers.SeaweedFS, tmp_path: Path, capsys) -> None:
    bucket = s3dev.bucket_name(f"doc-missing-{tmp_path.name}")
    path = _s3_config(seaweedfs, tmp_path, bucket)
    assert main(["--config", str(path), "doctor", "--json"]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert checks["catalog"]["ok"] and not checks["bucket"]["ok"]
    assert checks["bucket"]["detail"] == f"bucket {bucket!r} does not exist at {seaweedfs.endpoint}"
    assert "icebergdo init" in checks["bucket"]["hint"]
    # doctor is read-only: the bucket is still missing
    assert bucket not in [b["Name"] for b in seaweedfs.client().list_buckets()["Buckets"]]


def test_doctor_wrong_endpoint(seaweedfs: servers.SeaweedFS, tmp_path: Path, capsys) -> None:
    (port,) = s3dev.free_ports(1)
    path = _s3_config(seaweedfs, tmp_path, "whatever", endpoint=f"http://127.0.0.1:{port}", connect_timeout=1)
    assert main(["--config", str(path), "doctor"]) == 1
    out = capsys.readouterr().out
    assert f"cannot reach endpoint http://127.0.0.1:{port}" in out and "wrong endpoint" in out


def test_doctor_clock_skew(seaweedfs: servers.SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our clock 20 min ahead of the server's (injected: a real clock can't be skewed in a test)."""
    bucket = seaweedfs.create_bucket(f"doc-clock-{tmp_path.name}")
    config = Config.from_file(_s3_config(seaweedfs, tmp_path, bucket))
    real = storage._now
    monkeypatch.setattr(storage, "_now", lambda: real() + 1200)
    clock = {r.name: r for r in storage.check_warehouse(config, create_bucket=False)}["clock"]
    import re

    assert not clock.ok and "clock skew" in (clock.hint or "")
    skew = int(re.search(r"([+-]\d+)s off", clock.detail).group(1))  # type: ignore[union-attr]
    assert 1190 <= skew <= 1210, clock.detail  # the server's Date has 1 s resolution, plus latency


def test_doctor_postgres_wrong_password(postgres: servers.Postgres, tmp_path: Path) -> None:
    from icebergdo.dev.checks import check_catalog

    uri = postgres.create_database("doctor_pw").replace(postgres.uri("doctor_pw").split("@")[0], "postgresql+psycopg://postgres:bad-pw-xyz")
    config = Config.from_dict({"catalog": {"uri": uri, "warehouse": str(tmp_path / "wh")}})
    result = check_catalog(config)
    assert not result.ok and "password" in (result.hint or "") and "bad-pw-xyz" not in result.detail


def test_dev_s3_cli_start_status_stop(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "dev-s3"
    assert main(["dev", "s3", "start", "--dir", str(folder), "--port", "0", "--bucket", "devbucket"]) == 0
    out = capsys.readouterr().out
    server = s3dev.running(folder)
    try:
        assert server is not None and server.alive() and f"pid {server.pid}" in out
        assert server.secret_access_key and server.secret_access_key not in out
        config_path = folder / "icebergdo.toml"
        assert oct(config_path.stat().st_mode & 0o777) == "0o600"
        assert main(["--config", str(config_path), "doctor"]) == 0
        assert main(["dev", "s3", "status", "--dir", str(folder)]) == 0
    finally:
        assert main(["dev", "s3", "stop", "--dir", str(folder)]) == 0
    assert not server.alive() and s3dev.running(folder) is None
    assert not os.path.exists(f"/proc/{server.pid}") or "weed" not in Path(f"/proc/{server.pid}/cmdline").read_text(errors="replace")


# -- a PostgreSQL password made of every special character -----------------------------------------------
SPECIALS = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~é€"


def special_password(seed: int) -> str:
    """Every special character, each between a lower- and an upper-case letter that are not hex digits.

    Seeded, so the fragments cannot collide by chance with hex/ULID text in the output: no test flakes.
    """
    rng = random.Random(seed)
    return "".join(rng.choice("ghjkmnpqrstvwxyz") + rng.choice("GHJKMNPQRSTVWXYZ") + c for c in SPECIALS)


def fragments(secret: str, size: int = 3) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def leaked(text: str, secret: str) -> set[str]:
    """Fragments of length 3 of `secret` found in `text`, and its percent-encoded form if that is there."""
    found = {f for f in fragments(secret) if f in text}
    encoded = quote(secret, safe="")
    return found | ({encoded} if encoded in text else set())


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | None, str]:
    """(exit code or None if it raised, stdout + stderr + any exception's traceback)."""
    try:
        code: int | None = main(argv)
        tb = ""
    except BaseException:  # noqa: BLE001 - the traceback text is checked for secrets too
        code, tb = None, traceback.format_exc()
    out = capsys.readouterr()
    return code, out.out + out.err + tb


def test_postgres_password_with_every_special_character(
    postgres: servers.Postgres, seaweedfs: servers.SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    from psycopg import sql

    password, wrong = special_password(14), special_password(41)
    role = db = f"special_{tmp_path.name[-12:].lower().replace('-', '_')}"
    with postgres.connect() as con:
        con.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        con.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(role)))
    bucket = seaweedfs.create_bucket("icebergdo-tests")
    s3 = seaweedfs.s3_settings()
    path = tmp_path / "special.toml"
    path.write_text(
        "[catalog]\n"
        f'uri = "postgresql+psycopg://{role}:${{ICEBERGDO_PG_PASSWORD}}@127.0.0.1:{postgres.port}/{db}"\n'
        f'warehouse = "s3://{bucket}/special-{tmp_path.name.lower().replace("_", "-")}"\n\n[s3]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in s3.items())
    )
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({"ts": f"2026-11-25T10:{i:02d}:00Z", "type": "webhook", "payload": {"i": i}}) + "\n" for i in range(30)))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the default WAL folder of a config lakehouse
    caplog.set_level(logging.DEBUG)
    base = ["--config", str(path)]

    monkeypatch.setenv("ICEBERGDO_PG_PASSWORD", password)
    config = Config.from_file(path)
    assert password in config.secrets()
    outputs = {}
    for argv in (["init"], ["doctor"], ["ingest", str(events), "--no-progress"], ["tables", "--json"],
                 ["query", "SELECT count(*) AS n, count(DISTINCT id) AS d FROM events", "--format", "json"]):
        code, text = _run_cli(base + argv, capsys)
        outputs[argv[0]] = text
        assert code == 0, (argv, text[-3000:])
    assert json.loads(outputs["query"]) == [{"n": 30, "d": 30}]
    assert f"postgresql+psycopg://{role}:***@127.0.0.1:{postgres.port}/{db}" in outputs["init"]
    assert "all checks passed" in outputs["doctor"]

    monkeypatch.setenv("ICEBERGDO_PG_PASSWORD", wrong)
    for argv, expected in ((["init"], 4), (["doctor"], 1), (["tables"], 4), (["ingest", str(events), "--no-progress"], 4)):
        code, text = _run_cli(base + argv, capsys)
        outputs[f"wrong {argv[0]}"] = text
        assert code == expected, (argv, text[-3000:])
    assert "password authentication failed" in outputs["wrong doctor"]
    assert "wrong user or password" in outputs["wrong doctor"]

    everything = "\n".join(outputs.values()) + "\n" + caplog.text
    for secret in (password, wrong):
        assert not leaked(everything, secret), leaked(everything, secret)


def test_doctor_warns_about_tables_of_another_warehouse(postgres: servers.Postgres, tmp_path: Path, capsys) -> None:
    """Two configs, one PostgreSQL catalog (same name), two warehouses: they share tables; doctor says so."""
    from icebergdo import Lakehouse

    uri = postgres.create_database("shared_catalog")
    paths = {}
    for side in ("a", "b"):
        paths[side] = tmp_path / f"{side}.toml"
        paths[side].write_text(f'[catalog]\nname = "shared"\nuri = "{uri}"\nwarehouse = "{tmp_path / side}"\n')
    Lakehouse.open(config=str(paths["a"])).append_events([{"ts": "2026-11-25T10:00:00Z", "type": "webhook"}])

    assert main(["--config", str(paths["a"]), "doctor"]) == 0
    out = capsys.readouterr().out
    assert "ok   table locations: all 1 table(s) of catalog 'shared' are in" in out

    assert main(["--config", str(paths["b"]), "doctor"]) == 0  # a warning, not a failure
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "table locations" in x)
    assert line.startswith("WARN table locations: 1 of 1 table(s) of catalog 'shared' live outside")
    assert f"events.raw ({(tmp_path / 'a').as_uri()}/catalog/events.raw/metadata/" in line
    assert "own [catalog] name" in out and "all checks passed" in out

    assert main(["--config", str(paths["b"]), "doctor", "--json"]) == 0
    check = {c["name"]: c for c in json.loads(capsys.readouterr().out)}["table locations"]
    assert check["ok"] and check["warning"]
