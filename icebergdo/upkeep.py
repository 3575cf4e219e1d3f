"""Table upkeep after commits: a streaming table keeps itself bounded without an external scheduler.

Why: a buffered writer at its defaults commits every few seconds. Each commit reads and rewrites
metadata.json, which lists every snapshot kept, and the manifest list, which names one manifest
per append: without expiry and manifest merging, commit cost grows without bound (measured: 5.9x
after 300 commits). `icebergdo maintain` fixes that, but only if someone schedules it.

How: the facade registers an `Upkeep` as a post-commit hook of `Tables.append`, so it sees every
commit of the buffered writer and of `append_events`. The hook only counts (no I/O on the commit
path); when a table is due it wakes one background thread per lakehouse, which runs the
maintenance jobs through their public driver, `maintain(...)`: compaction (partitions whose time
range closed `icebergdo.upkeep.compact-closed-after-ms` ago are merged whole, open ones by the
usual small-file rule), manifest merging, and snapshot expiry down to the table's retention
(`history.expire.max-snapshot-age-ms`, at most `icebergdo.history.max-snapshots`, never fewer than
`history.expire.min-snapshots-to-keep`, Iceberg's default 1), then prunes ledger entries of writers gone for
`icebergdo.upkeep.ledger-max-age-ms`. `maintain` takes the table's maintenance lock without
waiting: if another maintainer holds it, this round is skipped. Appends never wait for upkeep.

A table is due after `icebergdo.upkeep.every-commits` commits by this process, after
`icebergdo.upkeep.every-ms` with at least one commit, or as soon as it holds
`every-commits` snapshots more than its cap (so short-lived processes such as a cron `ingest`
keep it bounded too). Opt out per table (`icebergdo.upkeep.enabled = false`) or per writer
(`lh.writer(upkeep=False)`); tables without the property are left alone.

Snapshots whose CDC events still wait to be routed (`icebergdo.cdc.unrouted.*`) are never
expired by upkeep: routing them needs their data.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
from pyiceberg.table import Table

from icebergdo import commit, ledger
from icebergdo.iceberg import properties
from icebergdo.maintenance import MaintenanceOptions, StepReport, maintain
from icebergdo.tables import (
    LEDGER_MAX_AGE_MS_PROPERTY,
    MAX_SNAPSHOTS_PROPERTY,
    STREAMING_TABLE_PROPERTIES,
    UPKEEP_CLOSED_AFTER_MS_PROPERTY,
    UPKEEP_ENABLED_PROPERTY,
    UPKEEP_EVERY_COMMITS_PROPERTY,
    UPKEEP_EVERY_MS_PROPERTY,
    AppendResult,
    Tables,
)

log = logging.getLogger(__name__)

STEPS = ["compact", "manifests", "expire"]
PAUSE_BUDGET_S = 5.0  # this process's appends to the table wait at most this long for a round
OPEN_PARTITION_FILES = 1_000_000  # upkeep leaves open partitions alone: each closed one is rewritten once
UNROUTED_PREFIX = "icebergdo.cdc.unrouted."  # icebergdo.cdc.routing: snapshots whose CDC events wait
PROTECT_MARGIN_MS = 60_000  # the cut-off is applied a little later than planned: keep a minute's margin
EXIT_WAIT_S = 30.0


_FALLBACKS = {**STREAMING_TABLE_PROPERTIES, "history.expire.min-snapshots-to-keep": "1"}  # Iceberg's default


def _int(props: Mapping[str, str], key: str) -> int:
    try:
        return int(props.get(key, _FALLBACKS[key]))
    except ValueError:
        log.warning("ignoring malformed table property %s=%r", key, props.get(key))
        return int(_FALLBACKS[key])


def enabled(props: Mapping[str, str]) -> bool:
    return props.get(UPKEEP_ENABLED_PROPERTY, "false").strip().lower() in ("true", "1", "yes", "on")


def expiry_cutoff_ms(
    snapshot_ms: list[int], now_ms: int, *, max_age_ms: int, max_count: int, protect_ms: int | None = None
) -> int:
    """Snapshots committed before the returned time are expired (besides the newest ones expiry always keeps).

    Older than `max_age_ms`, or beyond the newest `max_count` (0: no cap), but never at or after
    `protect_ms` (the oldest snapshot that must stay, less a margin).
    """
    cut = now_ms - max_age_ms
    if max_count > 0 and len(snapshot_ms) > max_count:
        cut = max(cut, sorted(snapshot_ms, reverse=True)[max_count - 1])
    if protect_ms is not None:
        cut = min(cut, protect_ms - PROTECT_MARGIN_MS)
    return cut


def protected_since_ms(table: Table) -> int | None:
    """Commit time of the oldest snapshot whose CDC events are still waiting to be routed."""
    times = []
    for key in table.metadata.properties:
        if key.startswith(UNROUTED_PREFIX):
            try:
                snap = table.metadata.snapshot_by_id(int(key[len(UNROUTED_PREFIX):]))
            except ValueError:
                continue
            if snap is not None:
                times.append(snap.timestamp_ms)
    return min(times) if times else None


def options_for(table: Table, base: MaintenanceOptions, now_ms: int) -> MaintenanceOptions:
    """The maintenance options one upkeep round uses for `table`, from its properties."""
    props = table.metadata.properties
    cutoff = expiry_cutoff_ms(
        [s.timestamp_ms for s in table.metadata.snapshots],
        now_ms,
        max_age_ms=_int(props, "history.expire.max-snapshot-age-ms"),
        max_count=_int(props, MAX_SNAPSHOTS_PROPERTY),
        protect_ms=protected_since_ms(table),
    )
    return MaintenanceOptions(
        older_than=max(0.0, (now_ms - cutoff) / 1000),
        retain_last=max(1, _int(props, "history.expire.min-snapshots-to-keep")),
        orphan_age=base.orphan_age,
        target_file_size=base.target_file_size,
        min_input_files=OPEN_PARTITION_FILES,
        rollup_after=_int(props, UPKEEP_CLOSED_AFTER_MS_PROPERTY) / 1000,
        lock_ttl=base.lock_ttl,
    )


@dataclass
class _TableState:
    commits: int = 0
    since: float = field(default_factory=time.monotonic)


@dataclass
class UpkeepStats:
    rounds: int = 0  # rounds run (including skipped ones)
    skipped: int = 0  # rounds skipped because another maintainer held the lock
    failed: int = 0
    ledger_pruned: int = 0
    last_table: str | None = None
    last_seconds: float | None = None
    last_error: str | None = None
    last_reports: list[dict[str, Any]] = field(default_factory=list)


class Upkeep:
    """The post-commit hook (`Tables.on_commit`) and its background thread; one per lakehouse."""

    __name__ = "upkeep"

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.enabled = True  # False: this lakehouse object starts no rounds (a process that maintains tables itself)
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._state: dict[str, _TableState] = {}
        self._due: list[str] = []
        self._running: str | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stats = UpkeepStats()
        ref = weakref.ref(self)

        def at_exit() -> None:
            upkeep = ref()
            if upkeep is not None:
                upkeep.stop(EXIT_WAIT_S)

        atexit.register(at_exit)

    # -- the hook: counting only ----------------------------------------------------------------
    def __call__(self, table: Table, batch: pa.Table, result: AppendResult) -> None:
        if not self.enabled or not result.upkeep or result.already_committed:
            return
        props = table.metadata.properties
        if not enabled(props):
            return
        every = max(1, _int(props, UPKEEP_EVERY_COMMITS_PROPERTY))
        every_s = _int(props, UPKEEP_EVERY_MS_PROPERTY) / 1000
        cap = _int(props, MAX_SNAPSHOTS_PROPERTY)
        with self._lock:
            st = self._state.setdefault(result.table, _TableState())
            st.commits += 1
            due = (
                st.commits >= every
                or time.monotonic() - st.since >= every_s
                or (cap > 0 and len(table.metadata.snapshots) >= cap + every)
            )
            if due and result.table not in self._due and result.table != self._running and not self._stopping:
                self._due.append(result.table)
                self._start()
                self._cv.notify_all()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="icebergdo-upkeep", daemon=True)
            self._thread.start()

    # -- the background thread ------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._due and not self._stopping:
                    self._cv.wait()
                if self._stopping or not self._due:
                    self._cv.notify_all()
                    return
                name = self._due.pop(0)
                self._running = name
                st = self._state.setdefault(name, _TableState())
                st.commits, st.since = 0, time.monotonic()  # commits from now on count toward the next round
            try:
                self.run(name)
            except Exception as e:  # noqa: BLE001 - upkeep never fails a writer; it reports and tries next time
                if "after shutdown" in str(e):  # the interpreter is exiting: its thread pools are gone
                    log.info("upkeep of %s interrupted by interpreter exit (the next round redoes it)", name)
                else:
                    log.warning("upkeep of %s failed (next round will try again): %s", name, e)
                with self._lock:
                    self._stats.failed += 1
                    self._stats.last_error = f"{type(e).__name__}: {e}"
            finally:
                with self._lock:
                    self._running = None
                    self._cv.notify_all()

    def run(self, name: str) -> list[StepReport]:
        """One upkeep round on `name` (in the calling thread): the maintenance jobs, then ledger pruning."""
        started = time.monotonic()
        table = self.tables.table(name)
        config = self.tables.config
        base = MaintenanceOptions.from_config(config.section("maintenance"), config.source)
        now_ms = int(time.time() * 1000)
        opts = options_for(table, base, now_ms)
        with commit.pause_commits(name, PAUSE_BUDGET_S):
            reports = maintain(self.tables, [name], STEPS, options=opts, progress=None)
        skipped = any(r.step == "all" and any("skipped" in n for n in r.notes) for r in reports)
        pruned: list[str] = []
        if not skipped:
            max_age = _int(table.metadata.properties, LEDGER_MAX_AGE_MS_PROPERTY)
            _, pruned = properties.remove_if_unchanged(
                self.tables.table(name), lambda props: ledger.stale(props, int(time.time() * 1000), max_age)
            )
            if pruned:
                log.info("upkeep of %s: pruned %d ledger entr(y/ies) of writers silent for %d days", name, len(pruned), max_age // 86_400_000)
        seconds = time.monotonic() - started
        with self._lock:
            self._stats.rounds += 1
            self._stats.skipped += int(skipped)
            self._stats.ledger_pruned += len(pruned)
            self._stats.last_table = name
            self._stats.last_seconds = seconds
            self._stats.last_error = None
            self._stats.last_reports = [r.to_dict() for r in reports]
        log.info("upkeep of %s: %s in %.2fs", name, "skipped (another maintainer holds the lock)" if skipped else
                 ", ".join(f"{r.step} {r.files_in}->{r.files_out} files" for r in reports), seconds)
        return reports

    # -- control --------------------------------------------------------------------------------
    def stats(self) -> UpkeepStats:
        with self._lock:
            return replace(self._stats, last_reports=list(self._stats.last_reports))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no round is due or running (for tests and benchmarks); False on timeout."""
        with self._lock:
            return self._cv.wait_for(lambda: not self._due and self._running is None, timeout)

    def stop(self, timeout: float | None = None) -> None:
        """No new rounds; wait up to `timeout` for a running one (at interpreter exit: `EXIT_WAIT_S`)."""
        with self._lock:
            self._stopping = True
            self._due.clear()
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
