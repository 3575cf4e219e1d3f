"""Progress of a long command: a bar on a terminal, quiet lines in a log, nothing with `--quiet`.

Maintenance jobs report progress as text (`"events.raw: compact"`, `"events.raw: compact group
3/10: 12 files → 1"`). The plan already says how many files and bytes every (table, job) will
rewrite or delete, so the bar is sized from the plan and advances as the jobs report: a job that
starts completes the one before it, a compaction group advances by its files (and the bytes in
proportion). The bar shows files, bytes, rate and ETA (rich). Into a pipe or a log there is no
bar: only lines worth keeping (refusals, skips, aborted groups), and the caller prints one summary
line per table at the end.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any

from icebergdo.units import format_duration, format_size

_STEP = re.compile(r"^(?P<table>\S+): (?P<step>retention|compact|manifests|expire|orphans)(?: \([^)]*\))?$")  # "(dry run)", "(spark)"
_GROUP = re.compile(r"^(?P<table>\S+): compact group (?P<i>\d+)/(?P<n>\d+): (?P<files>\d+) files")
_NOTEWORTHY = ("refused", "skipped", "aborted", "conflicted", "failed")


def log_line(text: str, out: IO[str] | None = None) -> None:
    """One timestamped line on stderr (or `out`), for logs."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    print(f"{stamp} {text}", file=out or sys.stderr, flush=True)


class MaintainProgress:
    """The `progress` callback of `maintain`: a rich bar on a terminal, noteworthy lines otherwise."""

    def __init__(self, planned: Iterable[Any], *, bar: bool, out: IO[str] | None = None) -> None:
        self.out = out or sys.stderr
        self.plan = {(r.table, r.step): (r.files_in, r.bytes_in) for r in planned}
        self.total_files = sum(f for f, _b in self.plan.values())
        self.total_bytes = sum(b for _f, b in self.plan.values())
        self.done_files = 0
        self.done_bytes = 0.0
        self.current: tuple[str, str] | None = None
        self.current_done = (0, 0.0)  # advanced inside the current job so far
        self._progress: Any = None
        self._task: Any = None
        if bar:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn

            self._progress = Progress(
                TextColumn("{task.description}", style="bold"),
                BarColumn(),
                TextColumn("{task.fields[files]}"),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.out, stderr=True),
                transient=False,
                refresh_per_second=4,
            )
            self._task = self._progress.add_task("maintain", total=max(self.total_bytes, 1), files=self._files_text())

    def _files_text(self) -> str:
        return f"{self.done_files:,}/{self.total_files:,} files"

    def __enter__(self) -> MaintainProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            if exc[0] is None:
                self._finish_current()
                self._progress.update(self._task, completed=max(self.total_bytes, 1), files=f"{self.total_files:,}/{self.total_files:,} files")
            self._progress.stop()

    def _advance(self, files: int, nbytes: float) -> None:
        self.done_files += files
        self.done_bytes += nbytes
        f, b = self.current_done
        self.current_done = (f + files, b + nbytes)
        if self._progress is not None:
            self._progress.update(self._task, completed=min(self.done_bytes, self.total_bytes), files=self._files_text())

    def _finish_current(self) -> None:
        if self.current is None:
            return
        files, nbytes = self.plan.get(self.current, (0, 0))
        f, b = self.current_done
        self._advance(max(0, files - f), max(0.0, nbytes - b))
        self.current = None

    def __call__(self, message: str) -> None:
        m = _STEP.match(message)
        if m:
            self._finish_current()
            self.current = (m.group("table"), m.group("step"))
            self.current_done = (0, 0.0)
            if self._progress is not None:
                self._progress.update(self._task, description=f"{m.group('table')}: {m.group('step')}")
            return
        g = _GROUP.match(message)
        if g and self.current is not None:
            files, nbytes = self.plan.get(self.current, (0, 0))
            k = int(g.group("files"))
            self._advance(k, nbytes * k / files if files else 0.0)
            return
        if any(word in message for word in _NOTEWORTHY):
            if self._progress is not None:
                self._progress.console.print(message, markup=False, highlight=False)
            else:
                log_line(message, self.out)


def table_summary(table: str, reports: list[Any]) -> str:
    """One line per table for logs: what each job did, and how long the table took."""
    parts = []
    for r in reports:
        if r.step == "all":
            parts.append("; ".join(r.notes) or "skipped")
            continue
        if not (r.files_in or r.files_out):
            parts.append(f"{r.step} nothing")
            continue
        verb = {"compact": "rewrote", "manifests": "merged"}.get(r.step, "deleted")
        text = f"{r.step} {verb} {r.files_in:,} file(s) ({format_size(r.bytes_in)})"
        if r.files_out:
            text += f" → {r.files_out:,} ({format_size(r.bytes_out)})"
        parts.append(text)
    took = sum(r.seconds for r in reports)
    return f"maintain {table}: " + ", ".join(parts) + f" in {format_duration(took)}"
