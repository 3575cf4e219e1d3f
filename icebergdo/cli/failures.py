"""Foreign exceptions as errors a user can act on: one line, the exit code of its meaning, no secret.

The libraries under us fail in their own words: a missing driver is `ModuleNotFoundError:
psycopg`, a wrong S3 secret is pyarrow's `OSError: ... AWS Error ACCESS_DENIED during HeadObject
operation: No response body` (a HEAD has no body, so the real reason is not even in it), an
unreachable endpoint is `curlCode: 7`, DuckDB's is an `HTTPException`. `translate` turns each into
an `IcebergdoError` with the exit code of its meaning (README "Exit codes"):

- a missing optional package → `SetupError` (8) naming the extra to install;
- an S3 failure → `StorageError` (4). The store is asked once more with the checks behind
  `icebergdo doctor` (a ListObjects, whose error has a body), so the line says *why* — wrong
  secret, unknown key, endpoint down, missing bucket — with the fix, and points to `doctor`;
- a catalog database failure, a local file-system failure → `StorageError` (4).

Anything else is a bug: one line, and the traceback with `-v`. Every text is scrubbed of the
config's secrets (`icebergdo.redact`).
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

from icebergdo.errors import IcebergdoError, SetupError, StorageError
from icebergdo.redact import redact_uri, safe_message, scrub

if TYPE_CHECKING:
    from icebergdo.config import Config

DOCTOR = "`icebergdo doctor` checks every setting"
# top-level module -> (extra that installs it, what needs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "psycopg": ("postgres", "a PostgreSQL catalog"),
    "psycopg2": ("postgres", "a PostgreSQL catalog"),
    "pyspark": ("spark", "Spark (spark-sql, maintain --engine spark)"),
    "plotly": ("report", "the HTML health report (health --html)"),
}


def missing_extra(module: str | None) -> SetupError | None:
    """The error for a missing optional package, or None when `module` is not one of ours."""
    top = (module or "").split(".")[0]
    if top not in EXTRAS:
        return None
    extra, what = EXTRAS[top]
    text = f"{what} needs the Python package {top!r}, which is not installed: pip install 'icebergdo[{extra}]'"
    if top == "psycopg2":  # SQLAlchemy's default driver for a bare postgresql:// URI
        text += " and write the catalog URI as postgresql+psycopg://… (icebergdo uses psycopg 3)"
    return SetupError(text)


def _secrets(config: Config | None) -> list[str]:
    return config.secrets() if config is not None else []


def _one_line(exc: BaseException, config: Config | None, limit: int = 240) -> str:
    return safe_message(exc, _secrets(config), limit=limit).split(": ", 1)[-1]


def looks_like_s3(exc: BaseException) -> bool:
    """botocore errors, pyarrow's S3 `OSError`s, DuckDB's httpfs errors."""
    module = type(exc).__module__ or ""
    if module.startswith(("botocore", "boto3", "s3transfer")):
        return True
    text = str(exc)
    if isinstance(exc, OSError) and ("AWS Error" in text or "curlCode" in text):
        return True
    return module.lstrip("_").startswith("duckdb") and type(exc).__name__ in ("HTTPException", "IOException") and ("HTTP" in text or "s3://" in text)


def probe(config: Config) -> tuple[str, str | None] | None:
    """(diagnosis, fix) when the warehouse's store refuses a ListObjects now, else None."""
    from icebergdo.dev.checks import check_bucket, s3_client, split_warehouse

    try:
        bucket, _prefix = split_warehouse(config)
        result = check_bucket(s3_client(config), config, bucket, create=False)
    except Exception:  # noqa: BLE001 - the probe only adds detail to an error we already have
        return None
    return None if result.ok else (result.detail, result.hint)


def storage_error(exc: BaseException, config: Config | None) -> StorageError:
    """An S3 failure as one line: the store's own diagnosis when it gives one, and the fix."""
    seen = _one_line(exc, config)
    found = probe(config) if config is not None and config.is_s3 else None
    if found is None:
        return StorageError(f"storage failed: {seen} ({DOCTOR})")
    diagnosis, fix = found
    return StorageError(f"storage: {diagnosis}" + (f"; fix: {fix}" if fix else "") + f" ({DOCTOR})")


def translate(exc: BaseException, config: Config | None) -> IcebergdoError | None:
    """The `IcebergdoError` a foreign exception means, or None for a bug."""
    if isinstance(exc, ModuleNotFoundError):
        return missing_extra(exc.name)
    if looks_like_s3(exc):
        return storage_error(exc, config)
    module = type(exc).__module__ or ""
    if module.startswith("sqlalchemy") and type(exc).__name__ in ("OperationalError", "InterfaceError", "DatabaseError", "TimeoutError"):
        uri = redact_uri(config.catalog_uri) if config is not None else "the catalog database"
        return StorageError(f"catalog database {uri}: {_one_line(exc, config)} ({DOCTOR})")
    if isinstance(exc, OSError) and not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
        return StorageError(_one_line(exc, config) or type(exc).__name__)
    return None


def explain(exc: IcebergdoError, config: Config | None) -> str:
    """Our own error's line, scrubbed; a storage error on S3 gains the store's diagnosis."""
    text = scrub(" ".join(str(exc).split()), _secrets(config))
    if isinstance(exc, StorageError) and config is not None and config.is_s3 and DOCTOR not in text:
        found = probe(config)
        if found is not None:
            diagnosis, fix = found
            text += f" — storage: {diagnosis}" + (f"; fix: {fix}" if fix else "")
        text += f" ({DOCTOR})"
    return text


def unexpected(exc: BaseException, config: Config | None) -> tuple[str, str]:
    """(one line, full traceback), both scrubbed: for an exception nobody translated (a bug)."""
    trace = scrub("".join(traceback.format_exception(exc)), _secrets(config))
    return safe_message(exc, _secrets(config), limit=300), trace
