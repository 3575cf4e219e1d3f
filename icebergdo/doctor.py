"""`icebergdo doctor`: check a config end to end, each check with a diagnosis and a fix hint.

Read-only except for one probe object (written and deleted) in an S3 warehouse; never creates a
bucket or a catalog table, and never prints a secret.
"""

from __future__ import annotations

import os
from pathlib import Path

from icebergdo.config import Config, redact_uri
from icebergdo.storage import CheckResult, check_warehouse


def check_config(config: Config) -> CheckResult:
    s3 = config.s3.redacted() if config.s3 else None
    where = f"{config.source}: catalog {redact_uri(config.catalog_uri)}, warehouse {config.warehouse}"
    if s3:
        where += f", endpoint {s3['endpoint'] or 'AWS default'}, region {s3['region']}"
    return CheckResult("config", True, where)


def check_catalog(config: Config) -> CheckResult:
    """Can we connect to the catalog database? (No tables are created.)"""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    uri = redact_uri(config.catalog_uri)
    if config.is_sqlite:
        path = config.catalog_uri.removeprefix("sqlite:///")
        folder = Path(path).parent
        if not folder.exists():
            return CheckResult("catalog", True, f"{uri} will be created on first use (folder {folder} is missing)")
        if not os.access(folder, os.W_OK):
            return CheckResult("catalog", False, f"cannot write to {folder}", "fix the folder's permissions or choose another --home")
    args = {"connect_timeout": 5} if config.catalog_uri.startswith("postgresql") else {}
    engine = create_engine(config.catalog_uri, connect_args=args)
    try:
        with engine.connect() as con:
            con.execute(text("SELECT 1"))
    except SQLAlchemyError as e:
        message = " ".join(str(getattr(e, "orig", None) or e).split())
        password = _uri_password(config.catalog_uri)
        if password:
            message = message.replace(password, "***")
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


def _uri_password(uri: str) -> str | None:
    import re

    m = re.search(r"://[^:/@]+:([^@]*)@", uri)
    return m.group(1) if m else None


def check_local_warehouse(config: Config) -> CheckResult:
    path = Path(config.warehouse.removeprefix("file://"))
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK):
        return CheckResult("warehouse", False, f"cannot write to {probe}", "fix the folder's permissions or choose another --home")
    state = "exists" if path.exists() else "will be created"
    return CheckResult("warehouse", True, f"folder {path} {state} and is writable")


def run_checks(config: Config) -> list[CheckResult]:
    """Every check for this config, in the order a user would fix them."""
    results = [check_config(config), check_catalog(config)]
    if config.is_s3:
        results += check_warehouse(config, create_bucket=False)
    else:
        results.append(check_local_warehouse(config))
    return results
