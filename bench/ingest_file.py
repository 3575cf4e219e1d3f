"""`icebergdo ingest` of a large JSON-lines file: events/s and peak RSS, next to DuckDB read_json + raw Parquet.

    python bench/ingest_file.py                 # a 1 GB file (the issue's size), generated in /tmp
    python bench/ingest_file.py --size-mb 200   # quicker

The file has the realistic shape (issue 11): events without ids, times spread over several hours and
up to 20 minutes late, JSON payloads of a few hundred bytes. Each variant runs as its own process
(`os.wait4` gives its own peak RSS), at the defaults a user gets:

- `icebergdo ingest FILE` into a fresh embedded lakehouse: read + validate + spill, then commit;
- DuckDB `COPY (SELECT * FROM read_json(FILE)) TO 'x.parquet' (COMPRESSION zstd)`: parse and one raw
  Parquet file, no validation, no ids, no partitioning, no catalog: the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T0 = 1772359200  # 2026-03-01T10:00:00Z


def generate(path: Path, size_mb: int) -> int:
    rng = random.Random(7)
    target = size_mb * 1024 * 1024
    written = lines = 0
    span = 6 * 3600
    per = 400  # ~bytes per line, to spread the times evenly
    total = target // per
    with path.open("w") as f:
        buf = []
        while written < target:
            i = lines
            ts = T0 + span * i / total - rng.uniform(0, 1200)
            ev = {"ts": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(ts))}.{int(ts % 1 * 1e6):06d}Z",
                  "type": rng.choice(["webhook", "rpc", "ws", "custom"]), "source": f"service-{i % 17}",
                  "payload": {"order": i, "amount": i % 1000 / 10, "currency": "EUR",
                              "customer": {"id": f"cus_{rng.randrange(10**9):09d}", "email": f"user{i % 5000}@example.com"},
                              "items": [{"sku": f"SKU-{(i + k) % 997}", "qty": k + 1} for k in range(1 + i % 3)],
                              "note": "x" * rng.randrange(40, 160)}}
            line = json.dumps(ev) + "\n"
            buf.append(line)
            written += len(line)
            lines += 1
            if len(buf) >= 10000:
                f.write("".join(buf))
                buf = []
        f.write("".join(buf))
    return lines


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout) of one process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # reaps the child: its own rusage
        took = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise SystemExit(f"{cmd[:4]} failed: {err.read().decode()[-2000:]}")
        return took, usage.ru_maxrss / 1024, out.read().decode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the generated file (default: %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep the generated file and outputs")
    args = ap.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="icebergdo-bench-file-"))
    try:
        path = folder / "events.jsonl"
        t = time.perf_counter()
        lines = generate(path, args.size_mb)
        print(f"ingest-file benchmark: {path.stat().st_size / 1e6:,.0f} MB, {lines:,} events "
              f"(no ids, 6 h, up to 20 min late, payloads {path.stat().st_size / lines:,.0f} bytes/line); generated in {time.perf_counter() - t:.1f}s")
        print(f"python {sys.version.split()[0]}; every variant is one process; peak RSS from wait4")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        subprocess.run([sys.executable, "-m", "icebergdo", "--home", str(folder / "lh"), "init"], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # the embedded lakehouse, as a user creates it first
        variants = {
            "icebergdo ingest (defaults)": ([sys.executable, "-m", "icebergdo", "--home", str(folder / "lh"), "ingest", str(path),
                                             "--no-progress", "--json"], env),
            "duckdb read_json + raw parquet": ([sys.executable, "-c",
                                                "import duckdb,sys; duckdb.sql(\"COPY (SELECT * FROM read_json(?, format='newline_delimited')) "
                                                "TO '\" + sys.argv[2] + \"' (FORMAT parquet, COMPRESSION zstd)\", params=[sys.argv[1]])",
                                                str(path), str(folder / "raw.parquet")], None),
        }
        print(f"{'variant':<32} {'seconds':>8} {'events/s':>11} {'peak RSS':>9} {'vs duckdb':>9}")
        results = {}
        for name, (cmd, e) in variants.items():
            results[name] = run(cmd, e)
        floor = lines / results["duckdb read_json + raw parquet"][0]
        for name, (seconds, rss, out) in results.items():
            rate = lines / seconds
            extra = ""
            if out.strip().startswith("{"):
                info = json.loads(out)
                extra = f"  ({info['commits']} commits, {info['data_files']} files, {info['events']:,} events)"
            print(f"{name:<32} {seconds:>8.1f} {rate:>11,.0f} {rss:>7,.0f}MB {rate / floor:>8.2f}x{extra}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
