"""Configuration: home folders, TOML files, ${ENV} interpolation, redaction, SQLite WAL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from icebergdo import Config, ConfigError, Lakehouse

REPO = Path(__file__).resolve().parents[2]


def test_home_is_sqlite_plus_folder(tmp_path: Path) -> None:
    c = Config.from_home(tmp_path / "lh")
    assert c.catalog_uri == f"sqlite:///{tmp_path / 'lh' / 'catalog.db'}"
    assert c.warehouse == (tmp_path / "lh" / "warehouse").as_uri()
    assert not c.is_s3 and c.is_sqlite


def test_env_interpolation_and_missing_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[catalog]\nuri = "postgresql+psycopg://u:${PGPW}@127.0.0.1:5/db"\nwarehouse = "s3://b/${PREFIX:-lake}"\n'
        '[s3]\nendpoint = "http://127.0.0.1:1"\nregion = "auto"\naccess_key_id = "${KEY}"\nsecret_access_key = "${SECRET}"\n'
    )
    monkeypatch.setenv("PGPW", "pgsecret")
    monkeypatch.setenv("KEY", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("SECRET", "supersecretvalue")
    c = Config.from_file(cfg)
    assert c.warehouse == "s3://b/lake" and c.s3 and c.s3.region == "auto"
    assert c.catalog_properties()["s3.secret-access-key"] == "supersecretvalue"
    shown = repr(c) + str(c.redacted())
    for secret in ("pgsecret", "supersecretvalue", "AKIAEXAMPLEKEY"):
        assert secret not in shown
    monkeypatch.delenv("SECRET")
    with pytest.raises(ConfigError, match="SECRET is not set") as err:
        Config.from_file(cfg)
    assert "supersecretvalue" not in str(err.value)


@pytest.mark.parametrize(
    "body, message",
    [
        ("[catalog]\nwarehouse = '/tmp/x'\n", "uri is required"),
        ("[catalog]\nuri = 'sqlite:///x.db'\n", "warehouse is required"),
        ("[catalog]\nuri = 'sqlite:///x.db'\nwarehouse = 'gs://b/p'\n", "warehouse must be"),
        ("[catalog\n", "not valid TOML"),
        ("[catalog]\nuri = 'sqlite:///x.db'\nwarehouse = 's3://b'\n[s3]\nendpont = 'x'\n", "unknown [s3] keys: endpont"),
    ],
)
def test_bad_config_files(tmp_path: Path, body: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Config.from_file(cfg)


def test_shipped_local_config_opens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    c = Config.from_file(REPO / "catalog-config" / "local.toml")
    assert c.catalog_uri == f"sqlite:///{tmp_path / 'lakehouse' / 'catalog.db'}"
    assert c.warehouse == (tmp_path / "lakehouse" / "warehouse").as_uri()
    assert c.section("retention") == {"events.raw": "90d"}


def test_resolve_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ICEBERGDO_CONFIG", raising=False)
    monkeypatch.setenv("ICEBERGDO_HOME", str(tmp_path / "envhome"))
    assert Config.resolve().home == tmp_path / "envhome"
    assert Config.resolve(home=str(tmp_path / "flag")).home == tmp_path / "flag"
    with pytest.raises(ConfigError):
        Config.resolve(home="a", config="b")


def test_sqlite_catalog_uses_wal_and_busy_timeout(tmp_path: Path) -> None:
    lh = Lakehouse.open(tmp_path / "lh")
    lh.events_table()
    with lh.catalog.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000


@pytest.mark.parametrize("value, expected", [("false", False), ('"false"', False), ('"true"', True), ("true", True)])
def test_path_style_accepts_booleans_and_interpolated_text(tmp_path: Path, value: str, expected: bool) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[catalog]\nuri = 'sqlite:///x.db'\nwarehouse = 's3://b/p'\n[s3]\npath_style = {value}\n")
    assert Config.from_file(cfg).s3.path_style is expected


def test_path_style_rejects_garbage(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[catalog]\nuri = 'sqlite:///x.db'\nwarehouse = 's3://b/p'\n[s3]\npath_style = 'maybe'\n")
    with pytest.raises(ConfigError, match="path_style: expected true or false"):
        Config.from_file(cfg)
