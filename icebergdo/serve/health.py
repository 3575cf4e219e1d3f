"""Readiness: can this process take events right now? Probed in the background, answered instantly.

Not ready (so `/readyz` answers 503 and ingest routes answer 503 with `Retry-After`) while:

- the catalog database does not answer `SELECT 1` on a fresh connection (a pooled one could
  outlive the server it was opened to);
- the object store (S3: a one-key listing under the warehouse prefix) or the warehouse folder
  (local: writable) is unreachable;
- the writer's last commit failed (its error, scrubbed of secrets, is the reason), or its pending
  events reached the bound (the WAL is over its bound);
- a probe has run longer than `probe_timeout` (a stalled endpoint is as bad as a refusing one).

The probes run in one daemon thread every `probe_interval` seconds, never on the event loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from icebergdo.config import Config
from icebergdo.redact import safe_message
from icebergdo.store import s3_client
from icebergdo.writer import WriterStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Status:
    ready: bool
    checks: dict[str, str] = field(default_factory=dict)  # name -> "ok" or the reason

    @property
    def reasons(self) -> list[str]:
        return [f"{k}: {v}" for k, v in self.checks.items() if v != "ok"]


class Readiness:
    def __init__(self, config: Config, interval: float, timeout: float, writer_stats: Callable[[], WriterStats | None],
                 pending_bound: Callable[[], int | None], secrets: list[str]) -> None:
        self.config = config
        self.interval = interval
        self.timeout = timeout
        self.writer_stats = writer_stats
        self.pending_bound = pending_bound
        self.secrets = [*config.secrets(), *secrets]
        self._engine: Any = None
        self._s3: Any = None
        self._last: dict[str, str] = {"catalog": "not probed yet", "storage": "not probed yet"}
        self._probe_started: float | None = None
        self._reported = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- probes ---------------------------------------------------------------------------------
    def _catalog(self) -> None:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        if self._engine is None:
            args: dict[str, Any] = {}
            if self.config.catalog_uri.startswith("postgresql"):
                args["connect_timeout"] = max(1, int(self.timeout))
            elif self.config.is_sqlite:
                args["timeout"] = self.timeout
            self._engine = sqlalchemy.create_engine(self.config.catalog_uri, poolclass=NullPool, connect_args=args)
        with self._engine.connect() as con:
            con.exec_driver_sql("SELECT 1")

    def _storage(self) -> None:
        if self.config.is_s3:
            assert self.config.s3 is not None
            if self._s3 is None:
                self._s3 = s3_client(self.config.s3, attempts=1)
            parsed = urlparse(self.config.warehouse)
            self._s3.list_objects_v2(Bucket=parsed.netloc, Prefix=parsed.path.lstrip("/"), MaxKeys=1)
            return
        folder = Path(urlparse(self.config.warehouse).path)
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise OSError(f"warehouse folder {folder} is missing or not writable")

    def probe(self) -> dict[str, str]:
        """Run every probe once (blocking); returns and remembers name -> "ok" | reason."""
        with self._lock:
            self._probe_started = time.monotonic()
        out: dict[str, str] = {}
        for name, fn in (("catalog", self._catalog), ("storage", self._storage)):
            try:
                fn()
                out[name] = "ok"
            except Exception as e:  # noqa: BLE001 - every failure is a reason, scrubbed of secrets
                out[name] = safe_message(e, self.secrets, limit=300)
        with self._lock:
            changed = out != self._last and not all(v == "not probed yet" for v in self._last.values())
            self._last = out
            self._probe_started = None
        if changed:
            bad = {k: v for k, v in out.items() if v != "ok"}
            if bad:
                log.warning("serve: not ready: %s", "; ".join(f"{k}: {v}" for k, v in bad.items()))
            else:
                log.warning("serve: ready again: catalog and storage answer")
        if not changed and any(v != "ok" for v in out.values()) and not self._reported:
            log.warning("serve: not ready: %s", "; ".join(f"{k}: {v}" for k, v in out.items() if v != "ok"))
        self._reported = True
        return out

    # -- background thread ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="icebergdo-serve-probe", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.probe()

    def stop(self) -> None:
        self._stop.set()

    # -- the answer -----------------------------------------------------------------------------
    def status(self) -> Status:
        with self._lock:
            checks = dict(self._last)
            started = self._probe_started
        if started is not None and time.monotonic() - started > self.timeout:
            checks["probe"] = f"probe running for more than {self.timeout:g}s (catalog or storage stalled)"
        stats = self.writer_stats()
        if stats is None:
            checks["writer"] = "not open yet"
        elif stats.last_error:
            checks["writer"] = "last commit failed: " + safe_message(RuntimeError(stats.last_error), self.secrets, limit=300).removeprefix("RuntimeError: ")
        else:
            bound = self.pending_bound()
            if bound is not None and stats.pending >= bound:
                checks["writer"] = f"{stats.pending} events pending, at the bound of {bound}"
            else:
                checks["writer"] = "ok"
        return Status(all(v == "ok" for v in checks.values()), checks)
