"""Configuration without servers: home folders, TOML files, `${ENV}` interpolation (percent-encoded
inside a URI's userinfo), the shipped configs, precedence and redaction of what a config shows."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from icebergdo import Config, ConfigError
from icebergdo.config import interpolate
from icebergdo.engines.duck import s3_secret_sql

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "catalog-config"
ENV = {
    "R2_ACCOUNT_ID": "0123456789abcdef0123456789abcdef",
    "R2_ACCESS_KEY_ID": "r2-access-key-id-value",
    "R2_SECRET_ACCESS_KEY": "r2-very-secret-value",
    "ICEBERGDO_PG_PASSWORD": "pg-very-secret",
    "SEAWEEDFS_ACCESS_KEY": "dev-access",
    "SEAWEEDFS_SECRET_KEY": "dev-very-secret",
}
EVERY_SPECIAL = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~é€"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    return ENV


def pg_config(uri: str) -> Config:
    return Config.from_dict({"catalog": {"uri": uri, "warehouse": "/tmp/wh"}})


# -- interpolation ------------------------------------------------------------------------------
def test_interpolation_replaces_variables_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A", "alpha")
    monkeypatch.delenv("UNSET", raising=False)
    raw = {"x": "${A}-${UNSET:-dflt}-${UNSET:-}", "n": 3, "t": True, "l": ["${A}", 1], "d": {"y": "$A {A} ${A}"}}
    assert interpolate(raw) == {"x": "alpha-dflt-", "n": 3, "t": True, "l": ["alpha", 1], "d": {"y": "$A {A} alpha"}}


def test_missing_variable_names_the_variable_and_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(ConfigError, match=r"c\.toml\.catalog\.uri: environment variable NOPE is not set"):
        interpolate({"catalog": {"uri": "postgresql://u:${NOPE}@h/db"}}, where="c.toml")


def test_value_is_not_interpolated_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A", "${B}")
    monkeypatch.setenv("B", "never")
    assert interpolate("x${A}") == "x${B}"


def test_userinfo_values_are_percent_encoded_and_decode_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGUSER", "ev@nt:s")
    monkeypatch.setenv("PGPASSWORD", EVERY_SPECIAL)
    monkeypatch.setenv("PGHOST", "db.internal")
    uri = interpolate("postgresql+psycopg://${PGUSER}:${PGPASSWORD}@${PGHOST}:5432/events")
    assert uri == f"postgresql+psycopg://ev%40nt%3As:{quote(EVERY_SPECIAL, safe='')}@db.internal:5432/events"
    url = make_url(uri)  # what SQLAlchemy (and so pyiceberg's SQL catalog) hands the driver
    assert (url.username, url.password, url.host, url.port, url.database) == ("ev@nt:s", EVERY_SPECIAL, "db.internal", 5432, "events")


def test_defaults_inside_userinfo_are_encoded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("U", raising=False)
    assert interpolate("postgresql://${U:-a b}@h/db") == "postgresql://a%20b@h/db"


@pytest.mark.parametrize(
    "template, expected",
    [
        ("https://${V}.r2.cloudflarestorage.com", "https://p@s:s/w%rd.r2.cloudflarestorage.com"),  # host, no userinfo
        ("postgresql://u:pw@h/${V}", "postgresql://u:pw@h/p@s:s/w%rd"),  # path
        ("postgresql://u:pw@h/db?options=${V}", "postgresql://u:pw@h/db?options=p@s:s/w%rd"),  # query
        ("${V}", "p@s:s/w%rd"),  # a whole URI from the environment is the environment's to encode
        ("plain ${V} text", "plain p@s:s/w%rd text"),
    ],
)
def test_only_userinfo_is_encoded(monkeypatch: pytest.MonkeyPatch, template: str, expected: str) -> None:
    monkeypatch.setenv("V", "p@s:s/w%rd")
    assert interpolate(template) == expected


def test_secrets_and_redaction_of_a_special_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", EVERY_SPECIAL)
    c = pg_config("postgresql+psycopg://icebergdo:${PW}@127.0.0.1:5432/icebergdo")
    assert c.secrets() == [EVERY_SPECIAL]
    assert c.redacted()["catalog_uri"] == "postgresql+psycopg://icebergdo:***@127.0.0.1:5432/icebergdo"
    shown = repr(c) + json.dumps(c.redacted())
    assert "%40" not in shown and "@127" in shown


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
    assert sorted(c.secrets()) == ["pgsecret", "supersecretvalue"]
    shown = repr(c) + str(c.redacted())
    for secret in ("pgsecret", "supersecretvalue", "AKIAEXAMPLEKEY"):
        assert secret not in shown
    monkeypatch.delenv("SECRET")
    with pytest.raises(ConfigError, match="SECRET is not set") as err:
        Config.from_file(cfg)
    assert "supersecretvalue" not in str(err.value)


# -- files and defaults ------------------------------------------------------------------------
def test_home_is_sqlite_plus_folder(tmp_path: Path) -> None:
    c = Config.from_home(tmp_path / "lh")
    assert c.catalog_uri == f"sqlite:///{tmp_path / 'lh' / 'catalog.db'}"
    assert c.warehouse == (tmp_path / "lh" / "warehouse").as_uri()
    assert not c.is_s3 and c.is_sqlite and c.secrets() == []


@pytest.mark.parametrize(
    "warehouse, expected",
    [("s3a://bucket/lake/", "s3://bucket/lake"), ("s3://bucket", "s3://bucket"), ("file:///tmp/wh/", "file:///tmp/wh")],
)
def test_warehouse_spellings(warehouse: str, expected: str) -> None:
    assert Config.from_dict({"catalog": {"uri": "sqlite:////tmp/x.db", "warehouse": warehouse}}).warehouse == expected


def test_relative_sqlite_and_warehouse_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    c = Config.from_dict({"catalog": {"uri": "sqlite:///lh/catalog.db", "warehouse": "lh/wh"}})
    assert c.catalog_uri == f"sqlite:///{tmp_path}/lh/catalog.db" and c.warehouse == (tmp_path / "lh" / "wh").as_uri()


@pytest.mark.parametrize(
    "body, message",
    [
        ("[catalog]\nwarehouse = '/tmp/x'\n", "uri is required"),
        ("[catalog]\nuri = 'sqlite:///x.db'\n", "warehouse is required"),
        ("[catalog]\nuri = 'sqlite:///x.db'\nwarehouse = 'gs://b/p'\n", "warehouse must be"),
        ("[catalog]\nuri = 'sqlite:///x.db'\nwarehouse = 's3:///p'\n", "has no bucket"),
        ("[catalog\n", "not valid TOML"),
        ("catalog = 3\n", "[catalog] must be a table"),
        ("[catalog]\nuri = 'sqlite:///x.db'\nwarehouse = 's3://b'\n[s3]\nendpont = 'x'\n", "unknown [s3] keys: endpont"),
        ("[catalog]\nuri = 'sqlite:///x.db'\nwarehouse = 's3://b'\n[s3]\nconnect_timeout = 0.5\n", "connect_timeout must be a number of seconds >= 1"),
        ("[catalog]\nuri = 'sqlite:///x.db'\nwarehouse = 's3://b'\n[s3]\nrequest_timeout = true\n", "request_timeout must be"),
    ],
)
def test_bad_config_files(tmp_path: Path, body: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Config.from_file(cfg)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        Config.from_file(tmp_path / "absent.toml")


def test_section_must_be_a_table() -> None:
    c = Config.from_dict({"catalog": {"uri": "sqlite:////tmp/x.db", "warehouse": "/tmp/w"}, "retention": "90d"})
    with pytest.raises(ConfigError, match=r"\[retention\] must be a table"):
        c.section("retention")
    assert c.section("absent") == {}


def test_shipped_local_config_opens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    c = Config.from_file(CONFIG_DIR / "local.toml")
    assert c.catalog_uri == f"sqlite:///{tmp_path / 'lakehouse' / 'catalog.db'}"
    assert c.warehouse == (tmp_path / "lakehouse" / "warehouse").as_uri()
    assert c.section("retention") == {"events.raw": "90d"}


def test_resolve_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ICEBERGDO_CONFIG", raising=False)
    monkeypatch.setenv("ICEBERGDO_HOME", str(tmp_path / "envhome"))
    assert Config.resolve().home == tmp_path / "envhome"
    assert Config.resolve(home=str(tmp_path / "flag")).home == tmp_path / "flag"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[catalog]\nuri = 'sqlite:///{tmp_path}/c.db'\nwarehouse = '{tmp_path}/wh'\n")
    monkeypatch.setenv("ICEBERGDO_CONFIG", str(cfg))
    assert Config.resolve().source == str(cfg)  # $ICEBERGDO_CONFIG before $ICEBERGDO_HOME
    assert Config.resolve(home=str(tmp_path / "flag")).home == tmp_path / "flag"  # flags before both
    with pytest.raises(ConfigError):
        Config.resolve(home="a", config="b")


@pytest.mark.parametrize("value, expected", [("false", False), ('"false"', False), ('"true"', True), ("true", True), ('"yes"', True), ('"0"', False)])
def test_path_style_accepts_booleans_and_interpolated_text(tmp_path: Path, value: str, expected: bool) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[catalog]\nuri = 'sqlite:///x.db'\nwarehouse = 's3://b/p'\n[s3]\npath_style = {value}\n")
    assert Config.from_file(cfg).s3.path_style is expected  # type: ignore[union-attr]


def test_path_style_rejects_garbage(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[catalog]\nuri = 'sqlite:///x.db'\nwarehouse = 's3://b/p'\n[s3]\npath_style = 'maybe'\n")
    with pytest.raises(ConfigError, match="path_style: expected true or false"):
        Config.from_file(cfg)


def test_s3_warehouse_without_s3_table_gets_default_settings() -> None:
    c = Config.from_dict({"catalog": {"uri": "sqlite:////tmp/x.db", "warehouse": "s3://b/p"}})
    assert c.is_s3 and c.s3 is not None and c.s3.region == "us-east-1" and c.s3.endpoint is None
    assert c.catalog_properties()["s3.region"] == "us-east-1" and "s3.secret-access-key" not in c.catalog_properties()


# -- the shipped configs -----------------------------------------------------------------------
def test_r2_config_parses_with_env(env: dict[str, str]) -> None:
    config = Config.from_file(CONFIG_DIR / "r2.toml")
    assert config.s3 is not None
    assert config.s3.endpoint == f"https://{env['R2_ACCOUNT_ID']}.r2.cloudflarestorage.com"
    assert config.s3.region == "auto"
    assert (config.s3.access_key_id, config.s3.secret_access_key) == (env["R2_ACCESS_KEY_ID"], env["R2_SECRET_ACCESS_KEY"])
    assert config.catalog_uri.startswith("postgresql+psycopg://icebergdo:pg-very-secret@")
    assert config.warehouse == "s3://events/lake"
    props = config.catalog_properties()
    assert props["s3.region"] == "auto" and props["s3.endpoint"] == config.s3.endpoint
    assert props["s3.force-virtual-addressing"] == "false"
    assert props["py-io-impl"] == "pyiceberg.io.pyarrow.PyArrowFileIO"
    assert float(props["s3.connect-timeout"]) == 5 and float(props["s3.request-timeout"]) == 30
    sql = s3_secret_sql(config)
    assert sql is not None
    assert f"ENDPOINT '{env['R2_ACCOUNT_ID']}.r2.cloudflarestorage.com'" in sql and "USE_SSL true" in sql
    assert "REGION 'auto'" in sql and "URL_STYLE 'path'" in sql
    shown = json.dumps(config.redacted()) + repr(config)
    assert env["R2_SECRET_ACCESS_KEY"] not in shown and env["ICEBERGDO_PG_PASSWORD"] not in shown


@pytest.mark.parametrize("name", ["seaweedfs.toml", "postgres.toml"])
def test_dev_configs_parse_with_env(env: dict[str, str], name: str) -> None:
    config = Config.from_file(CONFIG_DIR / name)
    assert config.is_s3 and config.s3 is not None
    assert config.s3.endpoint == "http://127.0.0.1:8333" and config.s3.path_style
    assert config.s3.secret_access_key == env["SEAWEEDFS_SECRET_KEY"]
    assert s3_secret_sql(config) is not None and "USE_SSL false" in s3_secret_sql(config)  # type: ignore[operator]
    if name == "postgres.toml":
        assert config.catalog_uri == "postgresql+psycopg://icebergdo:pg-very-secret@127.0.0.1:5432/icebergdo"
    else:
        assert config.is_sqlite


def test_shipped_postgres_config_takes_any_password(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICEBERGDO_PG_PASSWORD", EVERY_SPECIAL)
    config = Config.from_file(CONFIG_DIR / "postgres.toml")
    assert make_url(config.catalog_uri).password == EVERY_SPECIAL
    assert config.redacted()["catalog_uri"] == "postgresql+psycopg://icebergdo:***@127.0.0.1:5432/icebergdo"


def test_missing_env_var_is_named(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    monkeypatch.delenv("R2_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match="R2_SECRET_ACCESS_KEY"):
        Config.from_file(CONFIG_DIR / "r2.toml")


def test_s3_settings_repr_hides_secrets() -> None:
    c = Config.from_dict(
        {"catalog": {"uri": "sqlite:////tmp/x.db", "warehouse": "s3://b/p"},
         "s3": {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI", "session_token": "tok-secret-1"}}
    )
    shown = repr(c.s3) + repr(c)
    assert "wJalrXUtnFEMI" not in shown and "tok-secret-1" not in shown and "AKIAIOSFODNN7EXAMPLE" not in shown
    assert "AKIA…" in shown
    assert sorted(c.secrets()) == ["tok-secret-1", "wJalrXUtnFEMI"]
