"""DuckDB as an independent reader: the iceberg extension loaded offline from its PyPI wheels.

`INSTALL iceberg` would go to the network; the `duckdb-extension-*` packages ship the
binaries, so we `LOAD` them from site-packages by path.

Two ways to see the tables:

- `connect_catalog`: `ATTACH … (TYPE iceberg, ENDPOINT …)` to an Iceberg REST catalog (ours, or
  the one a `type = "rest"` config names). DuckDB asks the catalog for a table's current metadata
  at every query, so the connection never goes stale and sees tables created after it was opened;
  DuckDB can also INSERT into them. `events` is a view of `events.raw`, and `namespace.table`
  resolves in the attached catalog (its `events` schema is the default one).
- `connect` with `views`: one `iceberg_scan(metadata_location)` view per table, as of the call.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import duckdb

from icebergdo.config import Config
from icebergdo.errors import IcebergdoError, StorageError
from icebergdo.redact import MASK, safe_message

log = logging.getLogger(__name__)


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
    `namespace.table`, and `events.raw` also becomes plain `events`. `queries` maps more view
    names (in `main`) to SELECT statements, e.g. the de-duplicated `events_dedup`.
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
    _create_views(con, queries)
    return con


def _create_views(con: duckdb.DuckDBPyConnection, queries: dict[str, str] | None) -> None:
    for name, select in (queries or {}).items():
        try:
            con.execute(f"CREATE OR REPLACE VIEW main.{quote_ident(name)} AS {select}")
        except duckdb.Error as e:  # a derived view must never cost the connection itself
            log.warning("view %s not created: %s", name, e)


@dataclass(frozen=True)
class CatalogEndpoint:
    """An Iceberg REST catalog as DuckDB attaches it: URI plus a bearer token or OAuth2 client credentials."""

    uri: str
    warehouse: str = ""
    token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    oauth2_server_uri: str | None = None
    vended_credentials: bool = False  # ask the catalog for storage credentials instead of using our [s3] keys

    @classmethod
    def from_config(cls, config: Config) -> CatalogEndpoint:
        """The REST catalog of a `type = "rest"` config."""
        rest = config.rest
        if rest is None:
            raise IcebergdoError(f"{config.source}: not a REST catalog config")
        has_keys = bool(config.s3 and config.s3.access_key_id) or not config.is_s3
        return cls(
            uri=config.catalog_uri,
            warehouse=rest.warehouse or config.warehouse,
            token=rest.token,
            client_id=rest.client_id,
            client_secret=rest.client_secret,
            oauth2_server_uri=rest.oauth2_server_uri or (f"{config.catalog_uri.rstrip('/')}/v1/oauth/tokens" if rest.client_id else None),
            vended_credentials=not has_keys,
        )


def attach_sql(endpoint: CatalogEndpoint, alias: str, *, show_secrets: bool = True) -> list[str]:
    """The `CREATE SECRET` and `ATTACH` statements for `endpoint` (secrets masked unless `show_secrets`)."""

    def secret(value: str | None) -> str:
        return _q(value or "") if show_secrets else MASK

    secret_name = f"{alias}_catalog"
    if endpoint.client_id:
        opts = [f"CLIENT_ID '{_q(endpoint.client_id)}'", f"CLIENT_SECRET '{secret(endpoint.client_secret)}'"]
        if endpoint.oauth2_server_uri:
            opts.append(f"OAUTH2_SERVER_URI '{_q(endpoint.oauth2_server_uri)}'")
    elif endpoint.token:
        opts = [f"TOKEN '{secret(endpoint.token)}'"]
    else:
        opts = []
    out = []
    attach_opts = ["TYPE iceberg", f"ENDPOINT '{_q(endpoint.uri)}'"]
    if opts:
        out.append(f"CREATE OR REPLACE SECRET {quote_ident(secret_name)} (TYPE iceberg, {', '.join(opts)})")
        attach_opts.append(f"SECRET {quote_ident(secret_name)}")
    else:
        attach_opts.append("AUTHORIZATION_TYPE 'none'")
    if not endpoint.vended_credentials:
        attach_opts.append("ACCESS_DELEGATION_MODE 'none'")
    out.append(f"ATTACH '{_q(endpoint.warehouse)}' AS {quote_ident(alias)} ({', '.join(attach_opts)})")
    return out


def connect_catalog(
    config: Config, endpoint: CatalogEndpoint, database: str = ":memory:", *, alias: str | None = None, queries: dict[str, str] | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the REST catalog attached as `alias` (default: the catalog name), live.

    Unqualified `namespace.table` names resolve in the attached catalog and `events` is `events.raw`
    (search path: the catalog's `events` schema, then the connection's own `main`). `queries`: more
    views in the connection's own `main` (name → SELECT over the attached tables).
    """
    alias = alias or config.catalog_name
    con = connect(config, None, database)
    try:
        if not (config.is_s3 or config.s3):
            con.execute(f"LOAD '{_q(str(extension_path('httpfs')))}'")  # the catalog speaks HTTP
        for sql in attach_sql(endpoint, alias):
            con.execute(sql)
    except duckdb.Error as e:
        con.close()
        raise StorageError(f"DuckDB could not attach the REST catalog {endpoint.uri}: {safe_message(e, [endpoint.token, endpoint.client_secret])}") from None
    cat = quote_ident(alias)
    home = str(con.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
    try:
        con.execute(f"CREATE OR REPLACE VIEW main.events AS SELECT * FROM {cat}.events.raw")
        schema = "events"
    except duckdb.CatalogException:  # no events.raw yet: any namespace will do as the default schema
        found = con.execute("SELECT schema_name FROM duckdb_schemas() WHERE database_name = ? ORDER BY 1 LIMIT 1", [alias]).fetchone()
        schema = str(found[0]) if found else ""
    _create_views(con, queries)
    if schema:
        con.execute(f"USE {cat}.{quote_ident(schema)}")
        con.execute(f"SET search_path = '{_q(alias)}.{_q(schema)},{_q(home)}.main'")
    return con
