"""`icebergdo doctor`: is this lakehouse reachable and usable? One line per check, with fix hints."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from icebergdo.cli import COMMANDS, args, output
from icebergdo.cli.output import Column

CHECK_COLUMNS = [Column("name"), Column("ok"), Column("detail"), Column("hint"), Column("warning")]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help=COMMANDS["doctor"][1],
        description="Run every check for the selected lakehouse and print a diagnosis and a fix hint for each "
        "failure (missing driver, wrong endpoint, wrong keys, missing bucket, clock skew). Never prints a secret. "
        "Warnings (WARN) do not fail. Exit code 0 when everything passes, 1 otherwise.",
    )
    args.add_format(p)
    p.set_defaults(handler=cmd_doctor)


def check_drivers(config: Any) -> Any:
    """The catalog's database driver is installed (a PostgreSQL URI needs psycopg: the `postgres` extra)."""
    from icebergdo.cli.failures import missing_extra
    from icebergdo.dev.checks import CheckResult

    uri = config.catalog_uri
    if not uri.startswith("postgresql"):
        return None
    driver = uri.split("://", 1)[0].partition("+")[2] or "psycopg2"
    try:
        importlib.import_module(driver)
        return CheckResult("driver", True, f"{driver} is installed")
    except ImportError:
        pass
    err = missing_extra(driver)
    hint = str(err) if err is not None else f"install the {driver} driver"
    return CheckResult("driver", False, f"the catalog URI needs the Python package {driver!r}, which is not installed", hint)


def run_checks(config: Any) -> list[Any]:
    """`icebergdo.dev.checks.run_checks`, with the driver checked first (no traceback without it)."""
    from icebergdo.dev import checks

    driver = check_drivers(config)
    if driver is None or driver.ok:
        return ([driver] if driver else []) + checks.run_checks(config)
    results = [checks.check_config(config), driver]
    results += checks.check_warehouse(config, create_bucket=False) if config.is_s3 else [checks.check_local_warehouse(config)]
    return results


def cmd_doctor(a: argparse.Namespace, ctx: Any) -> int:
    results = run_checks(ctx.config)
    if a.format != "table":
        output.emit_dicts(CHECK_COLUMNS, [r.as_dict() for r in results], a.format)
    else:
        for r in results:
            print(f"{('WARN' if r.warning else 'ok  ') if r.ok else 'FAIL'} {r.name}: {r.detail}")
            if (not r.ok or r.warning) and r.hint:
                print(f"     fix: {r.hint}")
        failed = sum(not r.ok for r in results)
        print("all checks passed" if not failed else f"{failed} check(s) failed")
    return 0 if all(r.ok for r in results) else 1
