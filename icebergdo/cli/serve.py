"""`icebergdo serve`: the ingest service (docs/serve.md), and `--new-token` to mint a bearer token."""

from __future__ import annotations

import argparse
import ipaddress
import json
import secrets
from pathlib import Path
from typing import Any

from icebergdo.cli import args as flags
from icebergdo.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the ingest service: events, webhooks, RPC, CDC and WebSocket streams over HTTP",
        description="A long-running HTTP service (Starlette on uvicorn) writing to events.raw through one durable "
        "writer: every 202 means the events are in the fsynced write-ahead log. Settings come from the [serve] "
        "section of the config (docs/serve.md); flags override them. SIGTERM flushes, commits and exits 0.",
    )
    p.add_argument("--host", help="bind address (default: [serve] host, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: [serve] port, else 8181)")
    p.add_argument("--wal", metavar="DIR", help="write-ahead log folder, one per serve process (default: <home>/wal/serve)")
    p.add_argument("--max-age", type=flags.duration(positive=True), metavar="DURATION", help="commit at least this often, e.g. 5s, 1m (default: [serve] max_age, else 5s)")
    p.add_argument("--no-auth", action="store_true", help="accept requests without a bearer token (only on a loopback address)")
    maint = p.add_mutually_exclusive_group()
    maint.add_argument("--maintenance", dest="maintenance", action="store_true", default=None,
                       help="maintain the tables in-process on a schedule (default: on for --home, else [serve.maintenance])")
    maint.add_argument("--no-maintenance", dest="maintenance", action="store_false", help="no in-process maintenance")
    p.add_argument("--new-token", metavar="NAME", help="print a new random token and the [[serve.tokens]] entry for it, then exit")
    p.add_argument("--sources", help="with --new-token: comma-separated sources the token may write (default: any)")
    p.add_argument("--namespaces", help="with --new-token: comma-separated namespaces the token may write (default: any)")
    p.add_argument("--scope", action="append", choices=["ingest", "catalog"], help="with --new-token: scope (repeatable; default ingest)")
    p.set_defaults(handler=run, no_thp=True)  # see icebergdo/cli/process.py


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token(args: argparse.Namespace) -> int:
    from icebergdo.serve.settings import hash_token

    token = "ibd_" + secrets.token_urlsafe(32)
    lines = ["[[serve.tokens]]", f"name = {json.dumps(args.new_token)}", f"sha256 = \"{hash_token(token)}\""]
    lines.append(f"scopes = {json.dumps(args.scope or ['ingest'])}")
    for flag in ("sources", "namespaces"):
        value = getattr(args, flag)
        if value:
            lines.append(f"{flag} = {json.dumps([v.strip() for v in value.split(',') if v.strip()])}")
    print(f"token (shown once; give it to the client, keep it out of files): {token}")
    print("config entry (only the hash is stored):")
    print("\n".join(lines))
    return 0


def run(args: argparse.Namespace, ctx: Any) -> int:
    if args.new_token:
        return new_token(args)
    from icebergdo.serve.server import run as serve
    from icebergdo.serve.settings import Settings

    config = ctx.config
    settings = Settings.from_config(config).with_overrides(
        host=args.host, port=args.port, wal_dir=Path(args.wal).expanduser() if args.wal else None, max_age=args.max_age, maintenance=args.maintenance,
        auth=False if args.no_auth else None,
    )
    if args.port is not None and not 0 <= args.port <= 65535:
        raise ConfigError(f"--port: expected 0..65535, got {args.port}")
    if not settings.auth and not _is_loopback(settings.host):
        raise ConfigError(f"refusing to serve without auth on {settings.host}: --no-auth / auth = false only on a loopback address")
    return serve(ctx.lh, settings)
