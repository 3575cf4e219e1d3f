"""`icebergdo` command line. One module per command group, each exposing `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from icebergdo.config import Config
from icebergdo.errors import IcebergdoError

if TYPE_CHECKING:
    from icebergdo.lakehouse import Lakehouse

# Each module registers its sub-commands; handlers receive (args, ctx) and return an exit code.
COMMAND_MODULES = [
    "icebergdo.cli.core",
    "icebergdo.cli.ingest",
    "icebergdo.cli.wal",
    "icebergdo.cli.maintain",
    "icebergdo.cli.spark",
    "icebergdo.cli.cdc",
    "icebergdo.cli.dev",
    "icebergdo.cli.doctor",
]


class Context:
    """What every command needs: the resolved config and, lazily, the lakehouse."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._lh: Lakehouse | None = None

    @property
    def config(self) -> Config:
        return Config.resolve(home=self.args.home, config=self.args.config)

    @property
    def lh(self) -> Lakehouse:  # import deferred: `--help` stays fast
        if self._lh is None:
            from icebergdo.lakehouse import Lakehouse

            self._lh = Lakehouse(self.config)
        return self._lh


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icebergdo",
        description="Iceberg-native table manager for event data: ingest, query, CDC and maintenance "
        "of Apache Iceberg tables in the ADR-0002 layout, on a local folder or any S3-compatible store.",
        epilog="Lakehouse selection: --config FILE, else --home DIR, else $ICEBERGDO_CONFIG, "
        "else $ICEBERGDO_HOME, else ./lakehouse (SQLite catalog + folder warehouse).",
    )
    parser.add_argument("--home", metavar="DIR", help="embedded lakehouse folder (SQLite catalog + warehouse)")
    parser.add_argument("--config", metavar="FILE", help="TOML config: catalog URI, warehouse, S3 settings")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx = Context(args)
    try:
        return int(args.handler(args, ctx) or 0)
    except IcebergdoError as e:
        print(f"icebergdo: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("icebergdo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
