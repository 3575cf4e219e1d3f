"""`icebergdo` command line. One module per command group, each exposing `register(subparsers)`.

Start-up cost is paid per command, not per program: `COMMANDS` names the module and the one-line
help of every command, so `icebergdo --help` and `--version` import no command module at all, and
`icebergdo query` imports only `cli/core.py` (and then DuckDB and the catalog it needs). A module
listed in `COMMAND_MODULES` without an entry in `COMMANDS` is still loaded on every run (slower,
but correct), so adding a command never breaks the CLI.

Every failure ends as one line on stderr and the exit code of its meaning (`icebergdo.errors`,
README "Exit codes"): our own errors as they are, foreign ones (a missing driver, an S3 refusal,
an unreachable endpoint) translated by `icebergdo.cli.failures`; a closed stdout pipe ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icebergdo.errors import ConfigError, IcebergdoError

if TYPE_CHECKING:
    from icebergdo.config import Config
    from icebergdo.lakehouse import Lakehouse
    from icebergdo.tables import Tables

# command -> (module that registers it, one-line help shown by `icebergdo --help`).
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("icebergdo.cli.core", "create the catalog, the warehouse (bucket) and the events.raw table"),
    "ingest": ("icebergdo.cli.ingest", "append JSON-lines events (files or '-' for stdin; plain, .gz or .zst), exactly once per input"),
    "wal": ("icebergdo.cli.wal", "write-ahead logs: list pending and rejected batches, retry or drop rejected ones"),
    "tables": ("icebergdo.cli.core", "list tables with their metadata location, snapshot and row count"),
    "query": ("icebergdo.cli.core", "run SQL with DuckDB over one view per table"),
    "demo": ("icebergdo.cli.core", "ingest a realistic day of mixed events and show what landed where"),
    "maintain": ("icebergdo.cli.maintain", "table maintenance: retention, compaction, manifest rewrite, snapshot expiry, orphan removal"),
    "health": ("icebergdo.cli.maintain", "per table: what maintenance is due and why, files, small files, manifests, unreferenced bytes"),
    "spark-sql": ("icebergdo.cli.spark", "run SQL with Apache Spark over the same catalog and warehouse (needs icebergdo[spark] and Java)"),
    "spark": ("icebergdo.cli.spark", "Spark helpers: `spark conf` prints the settings for your own Spark (docs/spark.md)"),
    "cdc": ("icebergdo.cli.cdc", "CDC collections: change log + current state as Iceberg tables (apply, snapshot, show, changes, repair)"),
    "dev": ("icebergdo.cli.dev", "development helpers (local S3 server)"),
    "doctor": ("icebergdo.cli.doctor", "check the config: catalog connection, S3 endpoint, keys, bucket, permissions, clock skew"),
    "serve": ("icebergdo.cli.serve", "run the ingest service: events, webhooks, RPC, CDC and WebSocket streams over HTTP"),
    "attach": ("icebergdo.cli.attach", "print how DuckDB, Spark, Trino or pyiceberg attach this lakehouse's REST catalog"),
}
COMMAND_MODULES = list(dict.fromkeys(module for module, _help in COMMANDS.values()))
# Commands that may create a lakehouse (or only look at the config): the others refuse a missing one.
CREATES_LAKEHOUSE = frozenset({"init", "demo", "doctor", "serve", "attach"})
_GLOBAL_WITH_VALUE = ("--home", "--config", "--catalog")


class Context:
    """What every command needs, resolved on first use: the config and the lakehouse."""

    def __init__(self, args: argparse.Namespace, command: str | None = None) -> None:
        self.args = args
        self.command = command or getattr(args, "command", None)
        self._lh: Lakehouse | None = None

    @cached_property
    def config(self) -> Config:
        from icebergdo.config import Config

        config = Config.resolve(home=self.args.home, config=self.args.config, catalog=getattr(self.args, "catalog", None))
        if self.command not in CREATES_LAKEHOUSE:
            _require_existing(config, self.command or "this command")
        return config

    @property
    def config_or_none(self) -> Config | None:
        """The config if it was resolved already (for error messages), never raising."""
        return self.__dict__.get("config")

    @property
    def tables(self) -> Tables:
        """The catalog without the facade (no writer, CDC or maintenance imported): for read-only listing."""
        if self._lh is not None:
            return self._lh
        from icebergdo.tables import Tables

        return Tables(self.config)

    @property
    def lh(self) -> Lakehouse:  # the facade imports pyiceberg: only commands that use it pay for it
        if self._lh is None:
            from icebergdo.lakehouse import Lakehouse

            self._lh = Lakehouse(self.config)
        return self._lh


def _require_existing(config: Config, command: str) -> None:
    """A SQLite catalog that does not exist yet is a typo in --home/--config, not a new lakehouse."""
    if not config.is_sqlite or ":memory:" in config.catalog_uri:
        return
    db = Path(config.catalog_uri.removeprefix("sqlite:///"))
    if db.exists():
        return
    where = f"--home {config.home}" if config.home is not None and config.source.startswith("home ") else f"--config {config.source}"
    raise ConfigError(
        f"no lakehouse at {config.home or db.parent} ({db.name} does not exist): check {where.split()[0]}, "
        f"or create one with `icebergdo {where} init`"
    )


def _version() -> str:
    from importlib import metadata

    import icebergdo

    parts = []
    for dist in ("pyiceberg", "pyarrow", "duckdb"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} missing")
    return f"icebergdo {icebergdo.__version__} ({', '.join(parts)}, Python {sys.version.split()[0]})"


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, help="print the version (and of pyiceberg, pyarrow, duckdb) and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_a: Any, **_kw: Any) -> None:
        print(_version())
        parser.exit()


def command_of(argv: Sequence[str]) -> str | None:
    """The command word in `argv` (the first token that is not a global option or its value)."""
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token == "--":
            return None
        if token in _GLOBAL_WITH_VALUE:
            skip = True
            continue
        if token.startswith("-"):
            continue
        return token
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the module that registers `command` is imported ("*": every module)."""
    parser = argparse.ArgumentParser(
        prog="icebergdo",
        allow_abbrev=False,  # global options are found before parsing (`command_of`): no abbreviations
        description="Iceberg-native table manager for event data: ingest, query, CDC and maintenance "
        "of Apache Iceberg tables in the ADR-0002 layout, on a local folder or any S3-compatible store.",
        epilog="Lakehouse selection: --config FILE, else --home DIR, else --catalog NAME, else $ICEBERGDO_CONFIG, "
        "else $ICEBERGDO_HOME, else ./lakehouse (SQLite catalog + folder warehouse). "
        "Exit codes: docs/production.md.",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--home", metavar="DIR", help="embedded lakehouse folder (SQLite catalog + warehouse)")
    parser.add_argument("--config", metavar="FILE", help="TOML config: catalog URI, warehouse, S3 settings")
    parser.add_argument("--catalog", metavar="NAME", help="a pyiceberg catalog: .pyiceberg.yaml or PYICEBERG_CATALOG__NAME__* variables")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug); tracebacks for unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = COMMANDS[command][0] if command in COMMANDS else None
    eager = [m for m in COMMAND_MODULES if m not in {mod for mod, _h in COMMANDS.values()}]
    for name, (module, text) in COMMANDS.items():
        if name in sub.choices:
            continue
        if module == wanted or command == "*":
            importlib.import_module(module).register(sub)
        else:  # a placeholder with the same help: its module loads only when this command runs
            p = sub.add_parser(name, help=text, add_help=False)
            p.add_argument("_rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(handler=None)
    for module in eager:
        importlib.import_module(module).register(sub)
    return parser


def _parse(argv: list[str]) -> argparse.Namespace:
    args = build_parser(command_of(argv)).parse_args(argv)
    if getattr(args, "handler", None) is None:  # the command word was not where `command_of` looked
        args = build_parser(args.command).parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse(argv)
    except SystemExit as e:  # --help, --version (0) or a malformed flag (2, after argparse's message)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from icebergdo.cli import process

    process.apply(args)  # the process-wide memory settings the command asked for (ingest, maintain, serve)
    ctx = Context(args)
    try:
        try:
            code = int(args.handler(args, ctx) or 0)
            sys.stdout.flush()
            return code
        except IcebergdoError as e:
            from icebergdo.cli.failures import explain

            _fail(explain(e, ctx.config_or_none))
            return e.exit_code
        except KeyboardInterrupt:
            print("icebergdo: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            raise
        except Exception as e:  # a foreign exception: translate it, or report a bug in one line
            from icebergdo.cli.failures import translate

            err = translate(e, ctx.config_or_none)
            if err is None:
                return _unexpected(e, ctx, args.verbose)
            _fail(str(err))
            return err.exit_code
    except BrokenPipeError:
        return _closed_pipe()


def _fail(message: str) -> None:
    print(f"icebergdo: error: {message}", file=sys.stderr)


def _unexpected(e: Exception, ctx: Context, verbose: int) -> int:
    from icebergdo.cli.failures import unexpected

    text, trace = unexpected(e, ctx.config_or_none)
    if verbose:
        sys.stderr.write(trace)
    print(f"icebergdo: unexpected error: {text}" + ("" if verbose else " (run with -v for the traceback)"), file=sys.stderr)
    return 1


def _closed_pipe() -> int:
    """The reader of stdout went away (`| head`): stop quietly, like a process killed by SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
    except (OSError, ValueError):
        pass
    return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
