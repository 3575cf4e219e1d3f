"""CLI start-up: each command run N times as a whole process, before (main's code) and after (this tree).

    python bench/cli_startup.py [--runs 10] [--before /work/main] [--after .]

"before" and "after" differ only in PYTHONPATH (the same interpreter and packages), runs alternate
between them so machine load hits both alike, and the medians are printed side by side. The
lakehouse is a small embedded one made once (init + 2,000 demo events), so the data commands
measure start-up and not work. Goals: `--help` and `--version` under 0.15 s; data commands pay only
for the modules they use.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["--version"],
    ["--help"],
    ["query", "--help"],
    ["dev", "s3", "status", "--dir", "/nonexistent-icebergdo-bench"],
    ["doctor"],
    ["tables"],
    ["query", "SELECT count(*) FROM events"],
    ["health"],
]


def run(tree: Path, home: Path, argv: list[str]) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cli = [sys.executable, "-m", "icebergdo"] + (["--home", str(home)] if argv[0] not in ("--version", "--help") else []) + argv
    started = time.perf_counter()
    # cwd: not a checkout, or `python -m` would import the package from the current directory
    done = subprocess.run(cli, env=env, capture_output=True, cwd=home.parent)
    return time.perf_counter() - started, done.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--before", default="/work/main", help="tree with the old code (default /work/main)")
    ap.add_argument("--after", default=str(HERE), help="tree with the new code (default: this checkout)")
    a = ap.parse_args()
    before, after = Path(a.before).resolve(), Path(a.after).resolve()
    with tempfile.TemporaryDirectory(prefix="icebergdo-bench-") as tmp:
        home = Path(tmp) / "lh"
        subprocess.run([sys.executable, "-m", "icebergdo", "--home", str(home), "demo", "--events", "2000", "--day", "2026-05-01"],
                       env={**os.environ, "PYTHONPATH": str(after)}, capture_output=True, check=True, cwd=tmp)
        print(f"input: embedded lakehouse (SQLite + folder), 2,000 demo events in 24 hourly files; {a.runs} runs per command and tree")
        print(f"before: {before}   after: {after}   python {sys.version.split()[0]}   load avg {os.getloadavg()[0]:.2f}")
        print(f"{'command':<44} {'before':>9} {'after':>9} {'ratio':>7}")
        for argv in COMMANDS:
            times: dict[str, list[float]] = {"before": [], "after": []}
            codes: dict[str, set[int]] = {"before": set(), "after": set()}
            for _ in range(a.runs):
                for name, tree in (("before", before), ("after", after)):
                    t, code = run(tree, home, argv)
                    times[name].append(t)
                    codes[name].add(code)
            b, f = statistics.median(times["before"]), statistics.median(times["after"])
            note = "".join(f"  ({name} exit {sorted(c)})" for name, c in codes.items() if c - {0})
            label = " ".join(argv)[:44]
            print(f"{label:<44} {b:>8.3f}s {f:>8.3f}s {f / b:>6.2f}×{note}")
        print(f"load avg after: {os.getloadavg()[0]:.2f} (2 shared cores: numbers vary with the other developers' work)")


if __name__ == "__main__":
    main()
