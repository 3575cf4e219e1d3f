"""`icebergdo attach duckdb|spark|trino|pyiceberg`: the exact configuration for each engine, from the live config.

The catalog is the REST catalog: the one a `type = "rest"` config names, or ours as `icebergdo
serve` serves it for a SQL catalog (`[serve.catalog] uri`, or `--uri`). Storage settings come
from `[s3]`. Secrets (S3 secret key and session token, catalog token or client secret) print
as *** unless `--show-secrets`; the output never contains one otherwise.

`icebergdo attach token [--scope read|write]` makes a new bearer token for our catalog and prints
it once, with the `[[serve.catalog.tokens]]` entry (only its SHA-256) to paste into the config.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from icebergdo.config import Config
from icebergdo.redact import MASK, scrub

ENGINES = ("duckdb", "spark", "trino", "pyiceberg")
TOKEN_PLACEHOLDER = "<token: `icebergdo attach token`>"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attach",
        help="print how DuckDB, Spark, Trino or pyiceberg attach this lakehouse's REST catalog",
        description="Print the configuration each engine needs to attach the Iceberg REST catalog of this "
        "lakehouse: a `type = \"rest\"` catalog itself, or the catalog `icebergdo serve` serves for a SQL "
        "catalog. Secrets are masked unless --show-secrets. `attach token` makes a new catalog token.",
    )
    p.add_argument("engine", choices=[*ENGINES, "token"], help="the engine to configure, or `token` for a new catalog token")
    p.add_argument("--uri", help="the catalog URL clients use (default: the REST catalog of the config, else [serve.catalog] uri)")
    p.add_argument("--token", help="bearer token to print into the configuration (default: the config's, else a placeholder)")
    p.add_argument("--show-secrets", action="store_true", help="print secrets instead of ***")
    p.add_argument("--scope", choices=["read", "write"], default="read", help="attach token: the new token's scope (default read)")
    p.add_argument("--name", default="client", help="attach token: a name for the new token (default client)")
    p.set_defaults(handler=cmd_attach)


def endpoint_of(config: Config, uri: str | None, token: str | None) -> dict[str, Any]:
    """URI, warehouse and credentials of the catalog clients attach."""
    if config.is_rest and config.rest is not None:
        rest = config.rest
        out: dict[str, Any] = {"uri": uri or config.catalog_uri, "warehouse": rest.warehouse or config.warehouse}
        if token or rest.token:
            out["token"] = token or rest.token
        elif rest.client_id:
            out["client_id"], out["client_secret"] = rest.client_id, rest.client_secret
            out["oauth2_server_uri"] = rest.oauth2_server_uri or f"{out['uri'].rstrip('/')}/v1/oauth/tokens"
        return out
    serve = config.section("serve").get("catalog") or {}
    default = serve.get("uri") if isinstance(serve, dict) else None
    return {"uri": (uri or default or "http://127.0.0.1:8181/catalog").rstrip("/"), "warehouse": config.warehouse, "token": token or TOKEN_PLACEHOLDER}


def storage(config: Config) -> dict[str, str]:
    s3 = config.s3
    if s3 is None:
        return {}
    out = {"region": s3.region, "path_style": str(s3.path_style).lower()}
    for key, value in (("endpoint", s3.endpoint), ("access_key_id", s3.access_key_id), ("secret_access_key", s3.secret_access_key), ("session_token", s3.session_token)):
        if value:
            out[key] = value
    return out


def duckdb_text(config: Config, ep: dict[str, Any]) -> str:
    from icebergdo.engines import duck

    endpoint = duck.CatalogEndpoint(
        uri=ep["uri"], warehouse=ep["warehouse"], token=ep.get("token"), client_id=ep.get("client_id"),
        client_secret=ep.get("client_secret"), oauth2_server_uri=ep.get("oauth2_server_uri"),
        vended_credentials=bool(config.is_s3 and not (config.s3 and config.s3.access_key_id)),
    )
    lines = ["-- DuckDB >= 1.4 (duckdb CLI or any client)", "INSTALL iceberg; LOAD iceberg;", "INSTALL httpfs; LOAD httpfs;"]
    if (s3 := duck.s3_secret_sql(config)) is not None:
        lines.append(s3 + ";")
    lines += [sql + ";" for sql in duck.attach_sql(endpoint, config.catalog_name)]
    lines += [f"USE {duck.quote_ident(config.catalog_name)}.events;", "SELECT count(*) FROM raw;"]
    return "\n".join(lines)


def spark_text(config: Config, ep: dict[str, Any]) -> str:
    p = f"spark.sql.catalog.{config.catalog_name}"
    conf = {
        p: "org.apache.iceberg.spark.SparkCatalog",
        f"{p}.type": "rest",
        f"{p}.uri": ep["uri"],
        f"{p}.warehouse": ep["warehouse"],
    }
    if ep.get("token"):
        conf[f"{p}.token"] = ep["token"]
    if ep.get("client_id"):
        conf[f"{p}.credential"] = f"{ep['client_id']}:{ep['client_secret']}"
        conf[f"{p}.oauth2-server-uri"] = ep["oauth2_server_uri"]
    st = storage(config)
    if config.is_s3:
        conf[f"{p}.io-impl"] = "org.apache.iceberg.aws.s3.S3FileIO"
        conf[f"{p}.client.region"] = st["region"]
        conf[f"{p}.s3.path-style-access"] = st["path_style"]
        keys = (("endpoint", "s3.endpoint"), ("access_key_id", "s3.access-key-id"), ("secret_access_key", "s3.secret-access-key"), ("session_token", "s3.session-token"))
        for ours, theirs in keys:
            if ours in st:
                conf[f"{p}.{theirs}"] = st[ours]
    conf["spark.sql.extensions"] = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
    lines = ["# Spark 3.5 + iceberg-spark-runtime-3.5_2.12 (and iceberg-aws-bundle for S3): spark-sql / pyspark --conf …"]
    lines += [f"--conf {k}={v}" for k, v in conf.items()]
    return " \\\n".join(lines[:1]) + "\n" + " \\\n".join(lines[1:])


def trino_text(config: Config, ep: dict[str, Any]) -> str:
    props = {"connector.name": "iceberg", "iceberg.catalog.type": "rest", "iceberg.rest-catalog.uri": ep["uri"], "iceberg.rest-catalog.warehouse": ep["warehouse"]}
    if ep.get("token"):
        props["iceberg.rest-catalog.security"] = "OAUTH2"
        props["iceberg.rest-catalog.oauth2.token"] = ep["token"]
    if ep.get("client_id"):
        props["iceberg.rest-catalog.security"] = "OAUTH2"
        props["iceberg.rest-catalog.oauth2.credential"] = f"{ep['client_id']}:{ep['client_secret']}"
        props["iceberg.rest-catalog.oauth2.server-uri"] = ep["oauth2_server_uri"]
    st = storage(config)
    if config.is_s3:
        props["fs.native-s3.enabled"] = "true"
        props["s3.region"] = st["region"]
        props["s3.path-style-access"] = st["path_style"]
        keys = (("endpoint", "s3.endpoint"), ("access_key_id", "s3.aws-access-key"), ("secret_access_key", "s3.aws-secret-key"))
        for ours, theirs in keys:
            if ours in st:
                props[theirs] = st[ours]
    else:
        props["fs.native-local.enabled"] = "true"
    return f"# Trino: etc/catalog/{config.catalog_name}.properties\n" + "\n".join(f"{k}={v}" for k, v in props.items())


def pyiceberg_text(config: Config, ep: dict[str, Any]) -> str:
    props: dict[str, str] = {"type": "rest", "uri": ep["uri"], "warehouse": ep["warehouse"]}
    if ep.get("token"):
        props["token"] = ep["token"]
    if ep.get("client_id"):
        props["credential"] = f"{ep['client_id']}:{ep['client_secret']}"
        props["oauth2-server-uri"] = ep["oauth2_server_uri"]
    st = storage(config)
    keys = (("endpoint", "s3.endpoint"), ("region", "s3.region"), ("access_key_id", "s3.access-key-id"),
            ("secret_access_key", "s3.secret-access-key"), ("session_token", "s3.session-token"))
    for ours, theirs in keys:
        if ours in st:
            props[theirs] = st[ours]
    if st:
        props["s3.force-virtual-addressing"] = "false" if st["path_style"] == "true" else "true"
    name = config.catalog_name
    lines = [f"# ~/.pyiceberg.yaml — then: pyiceberg.catalog.load_catalog({json.dumps(name)}); also `icebergdo --catalog {name} …`"]
    lines += ["catalog:", f"  {config.catalog_name}:"] + [f"    {k}: {json.dumps(v)}" for k, v in props.items()]
    return "\n".join(lines)


def cmd_attach(args: argparse.Namespace, ctx: Any) -> int:
    if args.engine == "token":
        from icebergdo.restcatalog.settings import new_token, token_hash

        token = new_token()
        print(f"token (shown once; give it to the client): {token}\n")
        print("# add to the config:\n[[serve.catalog.tokens]]")
        print(f'name = "{args.name}"\nsha256 = "{token_hash(token)}"\nscope = "{args.scope}"')
        return 0
    config: Config = ctx.config
    ep = endpoint_of(config, args.uri, args.token)
    text = {"duckdb": duckdb_text, "spark": spark_text, "trino": trino_text, "pyiceberg": pyiceberg_text}[args.engine](config, ep)
    if not args.show_secrets:
        secrets = [*config.secrets(), ep.get("client_secret")]
        if ep.get("token") != TOKEN_PLACEHOLDER:
            secrets.append(ep.get("token"))
        text = scrub(text, secrets)
        if config.s3 and config.s3.access_key_id:
            text = text.replace(config.s3.access_key_id, MASK)
    print(text)
    return 0
