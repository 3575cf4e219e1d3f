"""Real servers for the `s3pg` backend: SeaweedFS S3 and a private PostgreSQL cluster, 127.0.0.1 only.

Both are started once per test session on free ports and stopped by PID at its end (and at
interpreter exit, should a session die first). A missing binary is a failure, never a skip.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from icebergdo.dev import s3dev
from icebergdo.dev.s3dev import SeaweedFS, free_ports

__all__ = ["SeaweedFS", "Postgres", "start_seaweedfs", "start_postgres", "postgres_bindir"]

PG_USER = "postgres"
PG_VERSIONS = ("17", "16", "15")


def start_seaweedfs(folder: Path) -> SeaweedFS:
    """`weed mini` with its data in `folder`, all ports free ones, random secret key."""
    server = s3dev.start(folder, access_key="icebergdo-test", secret_key=secrets.token_hex(16))
    atexit.register(server.stop)
    return server


def postgres_bindir() -> Path:
    """Debian's /usr/lib/postgresql/<v>/bin, or `$ICEBERGDO_PG_BIN`; an error when absent."""
    candidates = [os.environ.get("ICEBERGDO_PG_BIN")] + [f"/usr/lib/postgresql/{v}/bin" for v in PG_VERSIONS]
    for c in candidates:
        if c and (Path(c) / "initdb").exists():
            return Path(c)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError("PostgreSQL server binaries (initdb) not found: run scripts/system-deps.sh or set ICEBERGDO_PG_BIN")


class Postgres:
    """A private PostgreSQL cluster: its own data folder, port, superuser password."""

    def __init__(self, datadir: Path, port: int, password: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.datadir = datadir
        self.port = port
        self.user = PG_USER
        self._password = password
        self._proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self._proc.pid

    def uri(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}:{self._password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):  # -> psycopg.Connection
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self._password, dbname=database,
            autocommit=True, connect_timeout=5,
        )

    def create_database(self, name: str) -> str:
        """Create database `name` (if missing) and return its SQLAlchemy/psycopg URI."""
        from psycopg import errors, sql

        with self.connect() as con:
            try:
                con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except errors.DuplicateDatabase:
                pass
        return self.uri(name)

    def alive(self) -> bool:
        return self._proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT) by PID, SIGKILL if it lingers; then remove the cluster folder."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        shutil.rmtree(self.datadir, ignore_errors=True)


def _as_postgres() -> dict:
    """Popen/initdb keyword arguments: drop to the `postgres` user when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam(PG_USER)
    except KeyError:
        raise RuntimeError("running as root but there is no 'postgres' system user to run PostgreSQL as") from None
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def start_postgres(folder: Path, timeout: float = 60.0) -> Postgres:
    """initdb a fresh cluster, start it on a free 127.0.0.1 port with scram password auth, wait until ready.

    The cluster lives in a fresh folder under the system temp dir (pytest's own temp folders are
    private to root, and PostgreSQL runs as `postgres`); `folder` holds the server log.
    """
    bindir = postgres_bindir()
    folder.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(16)
    datadir = Path(tempfile.mkdtemp(prefix="icebergdo-pg-"))
    as_pg = _as_postgres()
    if as_pg:
        os.chown(datadir, as_pg["user"], as_pg["group"])
    pwfile = datadir / "pwfile"
    pwfile.write_text(password + "\n")
    if as_pg:
        os.chown(pwfile, as_pg["user"], as_pg["group"])
    pwfile.chmod(0o600)
    cluster = datadir / "cluster"
    initdb = [
        str(bindir / "initdb"), "-D", str(cluster), "-U", PG_USER, f"--pwfile={pwfile}",
        "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync",
    ]
    if as_pg:
        initdb = ["runuser", "-u", PG_USER, "--", *initdb]
    done = subprocess.run(initdb, cwd=datadir, capture_output=True, text=True)
    pwfile.unlink()
    if done.returncode != 0:
        shutil.rmtree(datadir, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    log = folder / "postgres.log"
    for _attempt in range(3):
        (port,) = free_ports(1)
        args = [
            str(bindir / "postgres"), "-D", str(cluster), "-p", str(port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={datadir}",
            "-c", "max_connections=200", "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "shared_buffers=32MB",
        ]
        with open(log, "ab") as out:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=datadir, **as_pg)
        server = Postgres(datadir, port, password, proc, log)
        if _wait_ready(server, timeout):
            atexit.register(server.stop)
            return server
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    tail = log.read_text(errors="replace")[-2000:]
    shutil.rmtree(datadir, ignore_errors=True)
    raise RuntimeError(f"PostgreSQL did not start: {tail}")


def _wait_ready(server: Postgres, timeout: float) -> bool:
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            return False
        try:
            with server.connect():
                return True
        except psycopg.OperationalError:
            time.sleep(0.1)
    return False
