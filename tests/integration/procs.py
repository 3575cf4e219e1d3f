"""Real processes for the concurrency and chaos tests: durable writers, `icebergdo` commands, kills.

A writer child appends events through a durable writer (`lh.writer(wal_dir=...)`) and records an
event id in its ack file only after `extend` returned, i.e. once the event is in the fsynced WAL:
those are the *acknowledged* events that must never be lost. The children get the lakehouse as a
TOML file (mode 0600), like a user's cron job would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from icebergdo import Config

REPO = Path(__file__).resolve().parents[2]
ICEBERGDO = [sys.executable, "-m", "icebergdo"]

WRITER = r"""
import os, sys, time
from datetime import UTC, datetime, timedelta
from icebergdo import Config, Lakehouse

cfg, wal, ack_path, stop_path, tag, hours, upkeep = sys.argv[1:8]
lh = Lakehouse.open(Config.from_file(cfg))
t0 = datetime(2026, 3, 1, tzinfo=UTC)
span = int(float(hours) * 3600)
w = lh.writer(wal_dir=wal, max_rows=400, max_age=0.2, upkeep=upkeep == "1")
open(ack_path + ".started", "w").close()
with open(ack_path, "a", buffering=1) as acks:
    i = 0
    while not os.path.exists(stop_path):
        batch = [
            {"id": f"{tag}-{i + j}", "ts": (t0 + timedelta(seconds=(7 * (i + j)) % span)).isoformat(),
             "type": "webhook", "source": tag, "payload": {"i": i + j, "text": "x" * 40}}
            for j in range(25)
        ]
        w.extend(batch)  # returns once the batch is in the fsynced WAL
        acks.write("".join(e["id"] + "\n" for e in batch))
        i += 25
        time.sleep(0.02)
w.close()
print("closed", flush=True)
"""


def config_lines(config: Config) -> list[str]:
    """The `[catalog]` and `[s3]` sections describing `config`'s lakehouse (TOML lines)."""
    lines = ["[catalog]", f"uri = {json.dumps(config.catalog_uri)}"]
    if config.rest is not None:  # our REST catalog server (the `rest` test backend)
        lines += ['type = "rest"', f"location = {json.dumps(config.warehouse)}"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in (("warehouse", config.rest.warehouse), ("token", config.rest.token)) if value]
    else:
        lines.append(f"warehouse = {json.dumps(config.warehouse)}")
    if config.s3 is not None:
        s3 = config.s3
        lines.append("[s3]")
        for key in ("endpoint", "region", "access_key_id", "secret_access_key"):
            value = getattr(s3, key)
            if value is not None:
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append(f"path_style = {'true' if s3.path_style else 'false'}")
    return lines


def write_config(config: Config, path: Path, sections: dict[str, dict] | None = None, extra: str = "") -> Path:
    """The lakehouse as a TOML file a child process (or `icebergdo --config`) can open; mode 0600.

    `sections` adds tables of plain values; `extra` is appended as TOML text."""
    lines = config_lines(config)
    for name, values in (sections or {}).items():
        lines.append(f"[{name}]")
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n" + extra)
    path.chmod(0o600)
    return path


def cli_args(config: Config, tmp_path: Path) -> list[str]:
    """`--home` for the embedded backend, a TOML `--config` (`write_config`) for the others."""
    if config.home is not None:
        return ["--home", str(config.home)]
    return ["--config", str(write_config(config, tmp_path / "icebergdo.toml"))]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def cli_in_child(args: list[str], report: str, *, before: str = "") -> dict:
    """`icebergdo ARGS` through `cli.main` in a fresh interpreter, then `report` (a Python expression
    evaluated in that process after the command) returned as JSON. `before` runs first. Arrow's pool
    is left to the command (no ARROW_DEFAULT_MEMORY_POOL from our environment). The command must succeed."""
    code = f"import json, sys\n{before}\nfrom icebergdo.cli import main\nrc = main(sys.argv[1:])\nprint('REPORT=' + json.dumps({report}))\nsys.exit(rc)"
    child_env = {k: v for k, v in env().items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=child_env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("REPORT=")]
    return json.loads(line.removeprefix("REPORT="))


def start_writer(cfg: Path, wal: Path, acks: Path, stop: Path, tag: str, hours: float = 4, upkeep: bool = True) -> subprocess.Popen[bytes]:
    """A durable writer process; `upkeep=False` turns off its own table upkeep (docs/writer.md)."""
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(cfg), str(wal), str(acks), str(stop), tag, str(hours), "1" if upkeep else "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
    )


def icebergdo(cfg: Path, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    """`icebergdo --config CFG ARGS...` as a child process (stdout/stderr piped)."""
    return subprocess.Popen([*ICEBERGDO, "--config", str(cfg), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), **kw)  # type: ignore[call-overload]


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early ({proc.returncode}): {proc.stderr.read().decode()[-3000:] if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path.name}")
        time.sleep(0.05)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL (if still running) and reap."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def acked(ack_files: list[Path]) -> set[str]:
    """Ids whose ack line is complete (a line cut by a SIGKILL does not count)."""
    out: set[str] = set()
    for f in ack_files:
        if not f.exists():
            continue
        text = f.read_text()
        lines = text.split("\n")
        out.update(x for x in lines[:-1] if x)  # the part after the last newline is incomplete
    return out
