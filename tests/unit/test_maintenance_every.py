"""The one `--every` loop (`icebergdo.maintenance.every`), used by `run_every` and `maintain --every`."""

from __future__ import annotations

import threading
import time

import pytest

from icebergdo.errors import BadInputError, LockBusyError
from icebergdo.maintenance import every


def test_rounds_run_on_schedule_and_busy_rounds_are_skipped() -> None:
    calls: list[float] = []
    skipped: list[str] = []

    def one_round() -> None:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise LockBusyError("events.raw: held by pid 1")

    every(one_round, 0.05, rounds=3, skipped=lambda e: skipped.append(str(e)))
    assert len(calls) == 3 and skipped == ["events.raw: held by pid 1"]
    assert calls[2] - calls[0] >= 0.09  # two waits of ~0.05 s between three rounds


def test_stop_ends_the_wait_and_other_errors_end_the_loop() -> None:
    stop = threading.Event()
    calls: list[int] = []

    def one_round() -> None:
        calls.append(1)
        stop.set()  # as the SIGINT handler of `maintain --every` does

    started = time.monotonic()
    every(one_round, 60, stop=stop)
    assert calls == [1] and time.monotonic() - started < 5

    def broken() -> None:
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        every(broken, 0.01, rounds=5)
    with pytest.raises(BadInputError):
        every(lambda: None, 0)
    every(broken, 0.01, rounds=0)  # no round at all
