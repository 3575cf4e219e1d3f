"""`icebergdo doctor`: is this lakehouse reachable and usable? One line per check, with fix hints."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check the config: catalog connection, S3 endpoint, keys, bucket, permissions, clock skew",
        description="Run every check for the selected lakehouse and print a diagnosis and a fix hint for each "
        "failure (wrong endpoint, wrong keys, missing bucket, clock skew). Never prints a secret. "
        "Warnings (WARN) do not fail. Exit code 0 when everything passes, 1 otherwise.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable: [{name, ok, detail, hint, warning}]")
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.dev.checks import run_checks

    results = run_checks(ctx.config)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for r in results:
            print(f"{('WARN' if r.warning else 'ok  ') if r.ok else 'FAIL'} {r.name}: {r.detail}")
            if (not r.ok or r.warning) and r.hint:
                print(f"     fix: {r.hint}")
        failed = sum(not r.ok for r in results)
        print("all checks passed" if not failed else f"{failed} check(s) failed")
    return 0 if all(r.ok for r in results) else 1
