"""`[catalog] type = "rest"`, pyiceberg's catalog conventions, and what `attach` prints: no servers."""

from __future__ import annotations

import pytest

from icebergdo.cli import main as cli_main
from icebergdo.config import Config
from icebergdo.engines.duck import CatalogEndpoint, attach_sql
from icebergdo.errors import ConfigError

TOKEN = "tok-" + "9" * 40
SECRET = "sec-" + "8" * 40


def rest(**catalog: object) -> Config:
    base = {"type": "rest", "uri": "https://catalog.example/api/catalog", "warehouse": "acct_bucket", "location": "s3://bucket/lake"}
    return Config.from_dict({"catalog": {**base, **catalog}, "s3": {"endpoint": "https://s3.example", "region": "auto",
                                                                    "access_key_id": "AKIDEXAMPLE1234", "secret_access_key": SECRET}})


def test_rest_catalog_properties_and_secrets() -> None:
    config = rest(token=TOKEN, scope="PRINCIPAL_ROLE:ALL", properties={"header.X-Extra": "1", "rest.sigv4-enabled": "false"})
    assert config.is_rest and not config.is_sqlite and config.warehouse == "s3://bucket/lake"
    props = config.catalog_properties()
    assert props["type"] == "rest" and props["uri"] == "https://catalog.example/api/catalog" and props["warehouse"] == "acct_bucket"
    assert props["token"] == TOKEN and props["scope"] == "PRINCIPAL_ROLE:ALL" and props["header.X-Extra"] == "1"
    assert props["s3.endpoint"] == "https://s3.example" and props["s3.secret-access-key"] == SECRET
    assert TOKEN in config.secrets() and SECRET in config.secrets()
    shown = repr(config)
    assert TOKEN not in shown and SECRET not in shown and "acct_bucket" in shown


def test_rest_client_credentials_and_errors() -> None:
    config = rest(client_id="engine", client_secret=SECRET)
    assert config.catalog_properties()["credential"] == f"engine:{SECRET}"
    with pytest.raises(ConfigError, match="client_id and client_secret"):
        rest(client_id="engine")
    with pytest.raises(ConfigError, match="location is required"):
        Config.from_dict({"catalog": {"type": "rest", "uri": "https://c", "warehouse": "name-only"}})
    with pytest.raises(ConfigError, match="http"):
        rest(uri="sqlite:///x.db")
    with pytest.raises(ConfigError, match="unknown \\[catalog\\] keys"):
        rest(home="/tmp")
    with pytest.raises(ConfigError, match="type must be"):
        rest(type="hive")
    # A URI warehouse is the storage root too.
    same = Config.from_dict({"catalog": {"type": "rest", "uri": "http://127.0.0.1:8181/catalog", "warehouse": "s3://b/p"}})
    assert same.warehouse == "s3://b/p" and same.rest is not None and same.rest.warehouse == "s3://b/p"


def test_pyiceberg_catalog_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))  # no .pyiceberg.yaml there: environment only
    monkeypatch.setenv("PYICEBERG_CATALOG__PROD__URI", "https://catalog.example/api")
    monkeypatch.setenv("PYICEBERG_CATALOG__PROD__WAREHOUSE", "acct_bucket")
    monkeypatch.setenv("PYICEBERG_CATALOG__PROD__TOKEN", TOKEN)
    monkeypatch.setenv("PYICEBERG_CATALOG__PROD__ICEBERGDO.LOCATION", "s3://bucket/lake")
    monkeypatch.setenv("PYICEBERG_CATALOG__PROD__S3.ENDPOINT", "https://s3.example")
    config = Config.resolve(catalog="prod")
    assert config.is_rest and config.catalog_name == "prod" and config.warehouse == "s3://bucket/lake"
    assert config.rest is not None and config.rest.token == TOKEN and config.catalog_properties()["s3.endpoint"] == "https://s3.example"
    (tmp_path / ".pyiceberg.yaml").write_text("catalog:\n  local:\n    uri: sqlite:////tmp/c.db\n    warehouse: file:///tmp/wh\n")
    local = Config.from_pyiceberg("local")
    assert local.catalog_type == "sql" and local.is_sqlite and local.warehouse == "file:///tmp/wh"
    with pytest.raises(ConfigError, match="not found"):
        Config.from_pyiceberg("missing")
    with pytest.raises(ConfigError, match="only one"):
        Config.resolve(catalog="prod", home="x")


def test_duckdb_attach_statements_mask_secrets() -> None:
    ep = CatalogEndpoint(uri="http://127.0.0.1:8181/catalog", warehouse="wh", client_id="engine", client_secret=SECRET,
                         oauth2_server_uri="http://127.0.0.1:8181/catalog/v1/oauth/tokens")
    shown = "\n".join(attach_sql(ep, "lake", show_secrets=False))
    assert SECRET not in shown and "CLIENT_ID 'engine'" in shown and "ACCESS_DELEGATION_MODE 'none'" in shown
    assert SECRET in "\n".join(attach_sql(ep, "lake"))
    anonymous = attach_sql(CatalogEndpoint(uri="http://h/c"), "lake")
    assert anonymous == ["ATTACH '' AS \"lake\" (TYPE iceberg, ENDPOINT 'http://h/c', AUTHORIZATION_TYPE 'none', ACCESS_DELEGATION_MODE 'none')"]


@pytest.mark.parametrize("engine", ["duckdb", "spark", "trino", "pyiceberg"])
def test_attach_prints_each_engine_without_secrets(engine: str, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "r2dc.toml"
    cfg.write_text(
        '[catalog]\ntype = "rest"\nuri = "https://catalog.example/api/catalog"\nwarehouse = "acct_bucket"\nlocation = "s3://bucket/lake"\n'
        f'token = "{TOKEN}"\n[s3]\nendpoint = "https://s3.example"\nregion = "auto"\naccess_key_id = "AKIDEXAMPLE1234"\nsecret_access_key = "{SECRET}"\n'
    )
    assert cli_main(["--config", str(cfg), "attach", engine]) == 0
    out = capsys.readouterr().out
    assert "https://catalog.example/api/catalog" in out and TOKEN not in out and SECRET not in out and "AKIDEXAMPLE1234" not in out
    assert "***" in out
    assert cli_main(["--config", str(cfg), "attach", engine, "--show-secrets"]) == 0
    assert TOKEN in capsys.readouterr().out
