"""DuckDB as an independent reader: the iceberg extension loaded offline from its PyPI wheels.

`INSTALL iceberg` would go to the network; the `duckdb-extension-*` packages ship the
binaries, so we `LOAD` them from site-packages by path.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from urllib.parse import urlparse

import duckdb

from icebergdo.config import Config
from icebergdo.errors import IcebergdoError


def extension_path(name: str) -> Path:
    """Path of `name.duckdb_extension` inside the `duckdb-extension-<name>` wheel for this DuckDB."""
    try:
        module = importlib.import_module(f"duckdb_extension_{name}")
    except ImportError:
        raise IcebergdoError(
            f"DuckDB extension package 'duckdb-extension-{name}=={duckdb.__version__}' is not installed"
        ) from None
    path = Path(str(module.__file__)).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        raise IcebergdoError(f"{path} is missing: duckdb-extension-{name} must match duckdb {duckdb.__version__}")
    return path


def s3_secret_sql(config: Config) -> str | None:
    """A DuckDB S3 secret built from the same settings pyiceberg uses."""
    s3 = config.s3
    if s3 is None:
        return None
    opts = ["TYPE s3", f"REGION '{_q(s3.region)}'", f"URL_STYLE '{'path' if s3.path_style else 'vhost'}'"]
    if s3.access_key_id:
        opts.append(f"KEY_ID '{_q(s3.access_key_id)}'")
    if s3.secret_access_key:
        opts.append(f"SECRET '{_q(s3.secret_access_key)}'")
    if s3.session_token:
        opts.append(f"SESSION_TOKEN '{_q(s3.session_token)}'")
    if s3.endpoint:
        parsed = urlparse(s3.endpoint if "://" in s3.endpoint else f"https://{s3.endpoint}")
        opts.append(f"ENDPOINT '{_q(parsed.netloc)}'")
        opts.append(f"USE_SSL {'true' if parsed.scheme == 'https' else 'false'}")
    return "CREATE OR REPLACE SECRET icebergdo_s3 (" + ", ".join(opts) + ")"


def _q(text: str) -> str:
    return text.replace("'", "''")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect(
    config: Config, views: dict[str, str] | None = None, database: str = ":memory:", queries: dict[str, str] | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with iceberg (and httpfs for S3) loaded and one view per table.

    `views` maps "namespace.table" to a metadata location; each becomes the view
    `namespace.table`, and `events.raw` also becomes plain `events`. `queries` maps further view
    names ("namespace.view" or "view") to SELECT statements (e.g. the de-duplicated `events_dedup`).
    """
    con = duckdb.connect(database, config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
    names = ["avro", "iceberg"] + (["httpfs"] if config.is_s3 or config.s3 else [])
    for name in names:
        con.execute(f"LOAD '{_q(str(extension_path(name)))}'")
    if sql := s3_secret_sql(config):
        con.execute(sql)
    for ident, location in (views or {}).items():
        ns, table = ident.split(".", 1)
        scan = f"SELECT * FROM iceberg_scan('{_q(location)}')"
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(ns)}")
        con.execute(f"CREATE OR REPLACE VIEW {quote_ident(ns)}.{quote_ident(table)} AS {scan}")
        if ident == "events.raw":
            con.execute(f"CREATE OR REPLACE VIEW main.events AS {scan}")
    for ident, select in (queries or {}).items():
        ns, view = ident.split(".", 1) if "." in ident else ("main", ident)
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(ns)}")
        con.execute(f"CREATE OR REPLACE VIEW {quote_ident(ns)}.{quote_ident(view)} AS {select}")
    return con
