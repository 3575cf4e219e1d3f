"""Pure parts of the Spark engine: catalog settings, `spark conf` lines, masking, the Java sources' cache key."""

from __future__ import annotations

import fnmatch
import shutil
import tomllib
from pathlib import Path

import pytest

from icebergdo.config import Config
from icebergdo.engines import spark as isp
from icebergdo.engines import spark_jars
from icebergdo.errors import ConfigError, SparkSetupError

ROOT = Path(__file__).resolve().parents[2]


def _s3_config(tmp_path: Path, **sections: object) -> Config:
    return Config.from_dict(
        {
            "catalog": {"uri": "postgresql+psycopg://ice:p%40ss@db.example:5432/lake", "warehouse": "s3://bucket/lake"},
            "s3": {"endpoint": "http://127.0.0.1:9", "region": "auto", "access_key_id": "AKIAEXAMPLEKEY123", "secret_access_key": "s3cr3t-value"},
            **sections,
        },
        source="test",
    )


def test_catalog_conf_uses_our_catalog_and_keeps_the_catalog_name(tmp_path: Path) -> None:
    cfg = _s3_config(tmp_path)
    conf = isp.catalog_conf(cfg)
    p = "spark.sql.catalog.icebergdo"
    assert conf[p] == isp.SPARK_CATALOG and conf[f"{p}.catalog-impl"] == isp.CATALOG_IMPL and f"{p}.type" not in conf
    assert conf[f"{p}.icebergdo.catalog-name"] == "icebergdo"
    assert conf[f"{p}.uri"] == "jdbc:postgresql://db.example:5432/lake" and conf[f"{p}.jdbc.password"] == "p@ss"
    assert conf[f"{p}.io-impl"] == isp.S3_FILEIO and conf[f"{p}.s3.region"] == "auto"
    # A second catalog (compaction) reads the same rows and carries the file prefix.
    second = isp.catalog_conf(cfg, name="icebergdo__compact", file_prefix="_compact-")
    assert second["spark.sql.catalog.icebergdo__compact.icebergdo.catalog-name"] == "icebergdo"
    assert second["spark.sql.catalog.icebergdo__compact.icebergdo.write.file-prefix"] == "_compact-"
    # Without our jar: Iceberg's plain JdbcCatalog, and nothing that needs our classes.
    plain = isp.catalog_conf(cfg, adr=False)
    assert plain[f"{p}.type"] == "jdbc" and f"{p}.catalog-impl" not in plain
    with pytest.raises(SparkSetupError):
        isp.catalog_conf(cfg, name="other", adr=False)


def test_iceberg_s3fileio_gets_its_own_property_names(tmp_path: Path) -> None:
    conf = isp.catalog_conf(_s3_config(tmp_path), fileio="iceberg")
    p = "spark.sql.catalog.icebergdo"
    assert conf[f"{p}.io-impl"] == isp.ICEBERG_S3_FILEIO
    assert conf[f"{p}.client.region"] == "auto" and conf[f"{p}.s3.path-style-access"] == "true"
    assert f"{p}.s3.region" not in conf and f"{p}.s3.force-virtual-addressing" not in conf


def test_choose_fileio_prefers_iceberg_when_the_sdk_is_there(tmp_path: Path) -> None:
    cfg = _s3_config(tmp_path)
    both = isp.Capabilities(icebergdo=True, aws_sdk=True, extensions=True)
    ours = isp.Capabilities(icebergdo=True, aws_sdk=False, extensions=True)
    neither = isp.Capabilities(icebergdo=False, aws_sdk=False, extensions=True)
    assert isp.choose_fileio(cfg, both) == "iceberg"
    assert isp.choose_fileio(cfg, ours) == "icebergdo"
    assert isp.choose_fileio(cfg, both, "icebergdo") == "icebergdo"
    with pytest.raises(SparkSetupError, match="iceberg-aws-bundle"):
        isp.choose_fileio(cfg, ours, "iceberg")
    with pytest.raises(SparkSetupError, match="spark conf"):
        isp.choose_fileio(cfg, neither)
    local = Config.from_home(tmp_path / "lh")
    assert isp.choose_fileio(local, neither) == "icebergdo"  # no S3: nothing to load


def test_spark_catalog_section_adds_properties(tmp_path: Path) -> None:
    cfg = _s3_config(tmp_path, spark={"catalog": {"s3.multipart.size": 8 << 20, "s3.retry.num-retries": "9"}})
    conf = isp.catalog_conf(cfg)
    assert conf["spark.sql.catalog.icebergdo.s3.multipart.size"] == str(8 << 20)
    assert conf["spark.sql.catalog.icebergdo.s3.retry.num-retries"] == "9"
    with pytest.raises(ConfigError, match=r"\[spark.catalog\]"):
        isp.catalog_conf(_s3_config(tmp_path, spark={"catalog": "nope"}))


def test_submit_conf_masks_secrets_unless_asked(tmp_path: Path) -> None:
    cfg = _s3_config(tmp_path)
    masked = dict(isp.submit_conf(cfg, jar="/opt/icebergdo.jar"))
    text = "\n".join(f"{k} {v}" for k, v in masked.items())
    assert "s3cr3t-value" not in text and "p@ss" not in text and "AKIAEXAMPLEKEY123" not in text
    assert masked["spark.sql.catalog.icebergdo.s3.secret-access-key"] == "***"
    assert masked["spark.sql.catalog.icebergdo.jdbc.password"] == "***"
    assert "iceberg-aws-bundle" in masked["spark.jars.packages"] and "org.postgresql:postgresql" in masked["spark.jars.packages"]
    assert masked["spark.jars"] == "/opt/icebergdo.jar" and masked["spark.sql.defaultCatalog"] == "icebergdo"
    shown = dict(isp.submit_conf(cfg, show_secrets=True, jar="/opt/icebergdo.jar"))
    assert shown["spark.sql.catalog.icebergdo.s3.secret-access-key"] == "s3cr3t-value"
    assert shown["spark.sql.catalog.icebergdo.jdbc.password"] == "p@ss"
    no_jar = dict(isp.submit_conf(cfg, fileio="icebergdo"))
    assert "spark.jars" not in no_jar and no_jar["spark.sql.catalog.icebergdo.type"] == "jdbc"
    assert "iceberg-aws-bundle" not in no_jar["spark.jars.packages"]


def test_java_sources_are_package_data() -> None:
    """Every .java file is matched by pyproject's package-data, so wheels carry them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["icebergdo"]
    sources = spark_jars.java_sources()
    assert {s.name for s in sources} >= {"AdrLocationProvider.java", "IcebergdoJdbcCatalog.java", "IcebergdoS3FileIO.java"}
    package = ROOT / "icebergdo"
    for src in sources:
        rel = src.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, g.replace("**/", "*")) for g in globs), rel


def test_jar_cache_key_follows_the_sources_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "java"
    shutil.copytree(spark_jars.JAVA_DIR, copy)
    monkeypatch.setattr(spark_jars, "JAVA_DIR", copy)
    runtime = Path("iceberg-spark-runtime-3.5_2.12-1.10.2.jar")
    key = spark_jars.sources_key(spark_jars.java_sources(), runtime)
    assert spark_jars.sources_key(spark_jars.java_sources(), runtime) == key  # stable
    target = copy / "icebergdo" / "Ulid.java"
    target.write_text(target.read_text() + "\n// changed\n")
    assert spark_jars.sources_key(spark_jars.java_sources(), runtime) != key
    assert spark_jars.sources_key(spark_jars.java_sources(), Path("other-runtime.jar")) != spark_jars.sources_key(spark_jars.java_sources(), runtime)
