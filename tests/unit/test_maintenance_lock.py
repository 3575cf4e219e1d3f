"""Who holds a maintenance lease, and when this host can tell that holder is gone (no catalog needed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from icebergdo.maintenance.lock import Holder, _process_start


def test_owner_string_round_trips_and_old_format_parses() -> None:
    me = Holder.me()
    assert me.pid == os.getpid() and me.host == socket.gethostname()
    assert Holder.parse(str(me)) == me
    old = Holder.parse("host-a:123:deadbeef")  # rows written before start times were recorded
    assert old == Holder("host-a", 123, "", "deadbeef")
    assert Holder.parse("garbage") is None and Holder.parse("h:notapid:x:y") is None


def test_a_live_process_is_not_gone() -> None:
    assert not Holder.me().is_gone()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = _process_start(child.pid) or ""
        assert not Holder(socket.gethostname(), child.pid, start, "x").is_gone()
    finally:
        child.kill()
        child.wait()


def test_a_dead_or_replaced_process_is_gone_but_only_on_this_host() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # exited and reaped: the pid no longer exists
    assert Holder(socket.gethostname(), child.pid, "", "x").is_gone()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped yet: a zombie
        assert Holder(socket.gethostname(), zombie.pid, "", "x").is_gone()
    finally:
        zombie.wait()
    # The pid exists, but it belongs to a process started at another time: the holder is gone.
    assert _process_start(os.getpid()) not in (None, "1")  # Linux: /proc tells start times
    assert Holder(socket.gethostname(), os.getpid(), "1", "x").is_gone()
    # Another host's holder is never judged from here (its lease has to expire).
    assert not Holder(socket.gethostname() + "-elsewhere", child.pid, "", "x").is_gone()
