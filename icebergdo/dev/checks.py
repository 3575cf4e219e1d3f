"""Can this config be used? The checks behind `icebergdo init` and `icebergdo doctor`.

pyiceberg/pyarrow do the table I/O; this module only answers "can this config use this catalog
and this bucket?" before anything is written, and turns S3 error codes and database errors into a
diagnosis with a fix hint. Read-only except for one probe object (written and deleted) in an S3
warehouse and, for `init`, the bucket. No message built here carries a secret: only the endpoint,
bucket, key names (masked) and error codes.
"""

from __future__ import annotations

import email.utils
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ulid import ULID

from icebergdo import store
from icebergdo.config import Config
from icebergdo.errors import ConfigError
from icebergdo.redact import mask_key, redact_uri, safe_message, scrub

PROBE_PREFIX = "_icebergdo/probe"
MAX_CLOCK_SKEW_S = 300  # S3/R2 refuse requests signed more than 15 min off; warn well before


def _now() -> float:
    """Our clock (a function so a test can skew it)."""
    return time.time()


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, whether it passed, what was seen, and how to fix it when it failed."""

    name: str
    ok: bool
    detail: str
    hint: str | None = None
    warning: bool = False  # passed, but something needs a look (shown as WARN; `doctor` still exits 0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_warehouse(config: Config) -> tuple[str, str]:
    """`s3://bucket/some/prefix` → ("bucket", "some/prefix")."""
    if not config.is_s3:
        raise ConfigError(f"{config.source}: warehouse {config.warehouse} is not on S3")
    rest = config.warehouse.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def s3_client(config: Config) -> Any:
    """A boto3 client for probing (few retries: checks should answer fast)."""
    if config.s3 is None:
        raise ConfigError(f"{config.source}: an s3:// warehouse needs an [s3] table")
    return store.s3_client(config.s3, attempts=2)


def diagnose(exc: BaseException, config: Config, bucket: str) -> tuple[str, str]:
    """(what went wrong, how to fix it) for a boto3 failure, without secrets."""
    from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    s3 = config.s3
    endpoint = (s3.endpoint if s3 else None) or "the default AWS endpoint"
    key = s3.access_key_id if s3 and s3.access_key_id else "(none)"
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return (
            f"cannot reach endpoint {endpoint}",
            "wrong endpoint or the server is down: check [s3] endpoint (R2: https://<account id>.r2.cloudflarestorage.com; "
            "local: `icebergdo dev s3 start`) and the network",
        )
    if isinstance(exc, ReadTimeoutError):
        return (f"endpoint {endpoint} accepted the connection but did not answer", "the server is stalled or overloaded; raise [s3] request_timeout only if it is just slow")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("InvalidAccessKeyId", "InvalidClientTokenId"):
            return (f"the access key {mask_key(key)} is not known to {endpoint}", "wrong access_key_id: check [s3] access_key_id (or the environment variable it comes from)")
        if code == "SignatureDoesNotMatch":
            return (
                f"the request signature was refused by {endpoint} (key {mask_key(key)})",
                "wrong secret_access_key for this access key (or a clock/region mismatch): check [s3] secret_access_key and region",
            )
        if code in ("RequestTimeTooSkewed",) or "skew" in code.lower():
            return ("the server refused the request time", "clock skew: sync this machine's clock (NTP: `timedatectl set-ntp true`)")
        if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and status == 404):
            return (f"bucket {bucket!r} does not exist at {endpoint}", "missing bucket: run `icebergdo init` (creates it) or fix the bucket in [catalog] warehouse")
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
            return (
                f"access denied to bucket {bucket!r} for key {mask_key(key)}",
                "wrong keys or a token without permission on this bucket: R2 tokens need 'Object Read & Write' on the bucket",
            )
        if code in ("AuthorizationHeaderMalformed", "InvalidRegion", "IllegalLocationConstraintException"):
            return (f"the region {s3.region if s3 else '?'} was refused ({code})", "check [s3] region (R2: auto)")
        return (f"{code or 'error'} (HTTP {status}) from {endpoint}", "see the provider's error documentation for this code")
    return (f"{type(exc).__name__}: {scrub(str(exc), config.secrets())[:300]}", "check [s3] settings and that the endpoint is an S3 API")


def check_bucket(client: Any, config: Config, bucket: str, *, create: bool) -> CheckResult:
    """Does the bucket exist (and is it ours)? Creates it when `create` and it is missing."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        # ListObjects, not HeadBucket: a HEAD error has no body, so a wrong key and a missing
        # bucket would both be a bare 403/404.
        client.list_objects_v2(Bucket=bucket, MaxKeys=1)
        return CheckResult("bucket", True, f"bucket {bucket!r} exists")
    except (BotoCoreError, ClientError) as e:
        diagnosis, hint = diagnose(e, config, bucket)
        missing = isinstance(e, ClientError) and diagnosis.startswith("bucket ")
        if not (missing and create):
            return CheckResult("bucket", False, diagnosis, hint)
    try:
        client.create_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as e:
        diagnosis, hint = diagnose(e, config, bucket)
        return CheckResult("bucket", False, f"bucket {bucket!r} is missing and could not be created: {diagnosis}", hint)
    return CheckResult("bucket", True, f"bucket {bucket!r} created")


def check_permissions(client: Any, config: Config, bucket: str, prefix: str) -> list[CheckResult]:
    """Write, read, list and delete one small probe object under the warehouse prefix."""
    from botocore.exceptions import BotoCoreError, ClientError

    key = "/".join(p for p in (prefix, PROBE_PREFIX, f"{ULID()}.txt") if p)
    body = b"icebergdo permission probe\n"
    steps = [
        ("write", lambda: client.put_object(Bucket=bucket, Key=key, Body=body)),
        ("read", lambda: _read_back(client, bucket, key, body)),
        ("list", lambda: _listed(client, bucket, key)),
        ("delete", lambda: client.delete_object(Bucket=bucket, Key=key)),
    ]
    out = []
    for name, step in steps:
        try:
            step()
            out.append(CheckResult(f"permission {name}", True, f"{name} s3://{bucket}/{key}"))
        except (BotoCoreError, ClientError, AssertionError) as e:
            if isinstance(e, AssertionError):
                out.append(CheckResult(f"permission {name}", False, str(e), "the store is not read-after-write consistent or drops objects"))
            else:
                diagnosis, hint = diagnose(e, config, bucket)
                out.append(CheckResult(f"permission {name}", False, f"{name} refused: {diagnosis}", hint))
            if name == "write":
                break  # nothing to read, list or delete
    return out


def _read_back(client: Any, bucket: str, key: str, body: bytes) -> None:
    got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert got == body, f"read back {len(got)} bytes, wrote {len(body)}"


def _listed(client: Any, bucket: str, key: str) -> None:
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])]
    assert key in keys, f"probe object {key} not listed right after writing it"


def check_clock(client: Any, config: Config, bucket: str) -> CheckResult:
    """Compare the server's HTTP Date with ours: signed requests fail once clocks drift apart."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = client.list_objects_v2(Bucket=bucket, MaxKeys=1)
        headers = response["ResponseMetadata"].get("HTTPHeaders", {})
    except ClientError as e:
        headers = e.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        code = e.response.get("Error", {}).get("Code", "")
        if code == "RequestTimeTooSkewed":
            return CheckResult("clock", False, "the server refused our request time", diagnose(e, config, bucket)[1])
    except BotoCoreError as e:
        diagnosis, hint = diagnose(e, config, bucket)
        return CheckResult("clock", False, diagnosis, hint)
    date = headers.get("date")
    if not date:
        return CheckResult("clock", True, "server sent no Date header; skew not measured")
    skew = _now() - email.utils.parsedate_to_datetime(date).timestamp()
    if abs(skew) > MAX_CLOCK_SKEW_S:
        return CheckResult(
            "clock", False, f"this machine's clock is {skew:+.0f}s off the server's",
            "clock skew: sync the clock (NTP: `timedatectl set-ntp true`); S3/R2 refuse requests more than 15 min off",
        )
    return CheckResult("clock", True, f"clock within {abs(skew):.0f}s of the server")


def check_warehouse(config: Config, *, create_bucket: bool) -> list[CheckResult]:
    """Endpoint + keys + bucket (+ create) + permissions + clock, stopping at the first blocking failure."""
    bucket, prefix = split_warehouse(config)
    client = s3_client(config)
    results = [check_bucket(client, config, bucket, create=create_bucket)]
    if not results[-1].ok:
        return results
    results += check_permissions(client, config, bucket, prefix)
    results.append(check_clock(client, config, bucket))
    return results


def init_warehouse(config: Config) -> list[CheckResult]:
    """For `icebergdo init` on an s3:// warehouse: create the bucket if missing, then check read/write/list/delete."""
    return check_warehouse(config, create_bucket=True)


# -- doctor -----------------------------------------------------------------------------------------
def check_config(config: Config) -> CheckResult:
    s3 = config.s3.redacted() if config.s3 else None
    where = f"{config.source}: catalog {redact_uri(config.catalog_uri)}, warehouse {config.warehouse}"
    if s3:
        where += f", endpoint {s3['endpoint'] or 'AWS default'}, region {s3['region']}"
    return CheckResult("config", True, where)


def _connect_args(config: Config) -> dict[str, Any]:
    return {"connect_timeout": 5} if config.catalog_uri.startswith("postgresql") else {}


def check_rest_catalog(config: Config) -> CheckResult:
    """A REST catalog: the config handshake (and token request) succeeds and namespaces can be listed."""
    from icebergdo.errors import IcebergdoError
    from icebergdo.iceberg.rest import open_rest_catalog

    try:
        namespaces = open_rest_catalog(config).list_namespaces()
    except IcebergdoError as e:
        return CheckResult("catalog", False, str(e), "check [catalog] uri, warehouse and the token or client credentials")
    except Exception as e:  # noqa: BLE001 - any failure of the first requests is the diagnosis
        return CheckResult("catalog", False, f"REST catalog {config.catalog_uri}: {scrub(str(e), config.secrets())[:300]}",
                           "check the token's permissions (it needs the catalog, not only the bucket) and the warehouse name")
    return CheckResult("catalog", True, f"REST catalog {config.catalog_uri}: {len(namespaces)} namespace(s)")


def check_catalog(config: Config) -> CheckResult:
    """Can we connect to the catalog database? (No tables are created.)"""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    if config.is_rest:
        return check_rest_catalog(config)
    uri = redact_uri(config.catalog_uri)
    if config.is_sqlite:
        path = config.catalog_uri.removeprefix("sqlite:///")
        folder = Path(path).parent
        if not folder.exists():
            return CheckResult("catalog", True, f"{uri} will be created on first use (folder {folder} is missing)")
        if not os.access(folder, os.W_OK):
            return CheckResult("catalog", False, f"cannot write to {folder}", "fix the folder's permissions or choose another --home")
    engine = create_engine(config.catalog_uri, connect_args=_connect_args(config))
    try:
        with engine.connect() as con:
            con.execute(text("SELECT 1"))
    except SQLAlchemyError as e:
        message = " ".join(str(getattr(e, "orig", None) or e).split())
        message = scrub(message, config.secrets())
        lower = message.lower()
        if "password authentication failed" in lower or "authentication failed" in lower:
            hint = "wrong user or password in [catalog] uri"
        elif "does not exist" in lower and "database" in lower:
            hint = "create the database first (createdb), or fix its name in [catalog] uri"
        elif "refused" in lower or "could not connect" in lower or "timeout" in lower:
            hint = "PostgreSQL is not running or not reachable at that host/port: check [catalog] uri"
        else:
            hint = "check [catalog] uri"
        return CheckResult("catalog", False, f"cannot connect to {uri}: {message[:300]}", hint)
    finally:
        engine.dispose()
    return CheckResult("catalog", True, f"connected to {uri}")


def check_local_warehouse(config: Config) -> CheckResult:
    path = Path(config.warehouse.removeprefix("file://"))
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK):
        return CheckResult("warehouse", False, f"cannot write to {probe}", "fix the folder's permissions or choose another --home")
    state = "exists" if path.exists() else "will be created"
    return CheckResult("warehouse", True, f"folder {path} {state} and is writable")


def check_table_locations(config: Config, limit: int = 5) -> CheckResult:
    """Tables of this catalog whose metadata lies outside this config's warehouse (a warning).

    The catalog database keys tables by catalog name, not by warehouse: two configs that share a
    database and a `[catalog] name` but point at different warehouses see, and write to, the same
    tables, each table staying where it was created. Read from the catalog's own table list (the
    SQL catalog's `iceberg_tables`), so no table's files need to be readable from here.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    if config.is_sqlite and not Path(config.catalog_uri.removeprefix("sqlite:///")).exists():
        return CheckResult("table locations", True, "no catalog yet")
    try:
        engine = create_engine(config.catalog_uri, connect_args=_connect_args(config))
    except (ArgumentError, NoSuchModuleError):
        return CheckResult("table locations", True, "not a SQL catalog: not checked")
    try:
        with engine.connect() as con:
            rows = con.execute(
                text("SELECT table_namespace, table_name, metadata_location FROM iceberg_tables WHERE catalog_name = :name"),
                {"name": config.catalog_name},
            ).all()
    except SQLAlchemyError as e:
        if "iceberg_tables" in str(getattr(e, "orig", e)):
            return CheckResult("table locations", True, "no tables yet")
        return CheckResult("table locations", False, f"cannot list tables: {safe_message(e, config.secrets(), 300)}", "see the catalog check")
    finally:
        engine.dispose()
    outside = sorted(f"{ns}.{name} ({location})" for ns, name, location in rows if location and not store.is_under(location, config.warehouse))
    if not outside:
        return CheckResult("table locations", True, f"all {len(rows)} table(s) of catalog {config.catalog_name!r} are in {config.warehouse}")
    more = f" and {len(outside) - limit} more" if len(outside) > limit else ""
    return CheckResult(
        "table locations", True,
        f"{len(outside)} of {len(rows)} table(s) of catalog {config.catalog_name!r} live outside {config.warehouse}: {', '.join(outside[:limit])}{more}",
        "another config shares this catalog database and name with a different warehouse: both see and write the same tables. "
        "Give each lakehouse its own [catalog] name (or database), unless sharing is intended",
        warning=True,
    )


def run_checks(config: Config) -> list[CheckResult]:
    """Every check for this config, in the order a user would fix them."""
    results = [check_config(config), check_catalog(config)]
    if config.is_s3:
        results += check_warehouse(config, create_bucket=False)
    else:
        results.append(check_local_warehouse(config))
    if results[1].ok:
        results.append(check_table_locations(config))
    return results
