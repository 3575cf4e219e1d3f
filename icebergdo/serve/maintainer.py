"""In-process maintenance: the service keeps its tables healthy on a schedule.

One daemon thread runs `Lakehouse.maintain()` (retention, compaction, manifests, expiry, orphans)
every `[serve.maintenance] every` (default 1 h; the first round one interval after start), on a
Lakehouse of its own so it never shares a catalog connection with the writer. Each table is
maintained under its lock row in the catalog database, so several `serve` processes (or a
separate `icebergdo maintain --every`) never maintain a table at the same time: a table another
maintainer holds is skipped for that round. A failed round is logged and the next one runs as
planned. On by default for the embedded default (`--home`), off otherwise unless enabled.
"""

from __future__ import annotations

import logging
import threading
import time

from icebergdo.config import Config
from icebergdo.redact import safe_message

log = logging.getLogger(__name__)


class Maintainer:
    def __init__(self, config: Config, every: float) -> None:
        self.config = config
        self.every = every
        self.rounds = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="icebergdo-serve-maintain", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        from icebergdo.lakehouse import Lakehouse

        lh: Lakehouse | None = None
        while not self._stop.wait(self.every):
            started = time.monotonic()
            try:
                lh = lh or Lakehouse(self.config)
                reports = lh.maintain(progress=lambda m: log.info("maintenance: %s", m))
                self.rounds += 1
                self.last_error = None
                changed = [r for r in reports if r.files_in or r.files_out]
                log.info("serve: maintenance round %d finished in %.1fs (%d job(s) changed files)",
                         self.rounds, time.monotonic() - started, len(changed))
            except Exception as e:  # noqa: BLE001 - the service keeps serving; the next round retries
                self.last_error = safe_message(e, self.config.secrets())
                log.warning("serve: maintenance round failed: %s", self.last_error)

    def stop(self, timeout: float) -> None:
        """Stop scheduling; wait up to `timeout` for a running round (its table lock expires if we exit first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
