"""`icebergdo serve` throughput and acknowledgement latency, next to the in-process durable writer, in one run.

    python bench/serve.py                 # 10 s per measurement, 3 rounds (medians)
    python bench/serve.py --seconds 5 --rounds 1

What is measured (every figure is "to a durable acknowledgement": the 202 / WS ack / `extend` return,
i.e. the events are fsynced in the WAL; commits follow the writer's thresholds in the background):

1. NDJSON batches of 1,000 events, 4 connections (wrk) → events/s; next to it the in-process durable
   writer fed the same 1,000-event NDJSON batches (json.loads per line + `Writer.extend`) from 4
   threads for the same time. Goals: server ≥ 0.5× in-process and ≥ 100k events/s.
2. Single-event POSTs, 32 connections (wrk --latency) → requests/s, p50/p99 time to the 202.
   Goals: ≥ 5k req/s, p99 ≤ 50 ms.
3. WebSocket: one connection streaming NDJSON frames of 100 events (at most 8 frames unacknowledged)
   → events/s and ack lag (frame sent → ack covering it), p50/p99.

Events have the realistic shape: no ids, event times over several hours and up to 20 minutes late
(out of order), JSON payloads of a few hundred bytes. Every server runs with the defaults a user gets
(`icebergdo --home DIR serve`: max_age 5 s, max_rows 1M, WAL in the home) except `--no-auth`
(an embedded home has no config file for tokens; a token check is one SHA-256 per request).
The load generator shares the machine's 2 cores with the server: the numbers are a floor.
Needs `wrk` (Debian package; installed with apt-get when missing and running as root).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from icebergdo import Lakehouse
from icebergdo.dev.s3dev import free_ports

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
TYPES = ["webhook", "rpc", "custom", "ws"]


def make_events(n: int, seed: int) -> list[dict]:
    """No ids; times over 4 hours, up to 20 min late; payloads of ~300 bytes of JSON."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0 + timedelta(seconds=i * 4 * 3600 / max(n, 1)) - timedelta(seconds=rng.uniform(0, 1200))
        out.append({
            "ts": ts.isoformat(), "type": rng.choice(TYPES), "source": f"service-{i % 7}",
            "payload": {"order": f"ord_{rng.getrandbits(48):012x}", "amount": round(rng.uniform(1, 500), 2), "currency": "EUR",
                        "customer": {"id": f"cus_{rng.getrandbits(40):010x}", "country": rng.choice(["DE", "FR", "NL", "ES"])},
                        "items": [{"sku": f"sku-{rng.randint(1, 999)}", "qty": rng.randint(1, 3)} for _ in range(3)],
                        "note": "x" * rng.randint(40, 90)},
        })
    return out


def ndjson(events: list[dict]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in events).encode()


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        sys.exit("bench/serve.py needs wrk: apt-get install wrk")
    return found


class Server:
    def __init__(self, home: Path) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home.parent / f"{home.name}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "icebergdo", "--home", str(home), "serve", "--no-auth", "--port", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise SystemExit(f"server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)

    def cpu(self) -> float:
        """CPU seconds (user + system) the server process has used: the load-independent cost."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, script: str, *, connections: int, threads: int, seconds: float, folder: Path) -> dict:
    path = folder / f"wrk-{random.getrandbits(32):x}.lua"
    path.write_text(script)
    out = subprocess.run([ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(path), url],
                         capture_output=True, text=True, check=True).stdout
    codes = re.findall(r"^status (\d+) (\d+)$", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"rps": rps, "p50_ms": ms("50"), "p99_ms": ms("99"), "non2xx": int(non2xx.group(1)) if non2xx else 0, "codes": codes}


def lua_post(bodies: list[bytes], content_type: str) -> str:
    quoted = ",\n".join("[==[" + b.decode() + "]==]" for b in bodies)
    return (
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "{content_type}"\n'
        f"local bodies = {{\n{quoted}\n}}\n"
        "local n = 0\n"
        "request = function()\n  n = n + 1\n  return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1])\nend\n"
    )


def in_process(home: Path, batch: bytes, seconds: float, threads: int) -> float:
    """The durable writer in this process, fed the same NDJSON batches from `threads` threads: events/s to `extend` returning."""
    lh = Lakehouse.open(home)
    lh.events_table()
    done = [0] * threads
    stop = time.monotonic() + seconds
    with lh.writer(wal_dir=home / "wal" / "inproc") as w:
        def feed(k: int) -> None:
            while time.monotonic() < stop:
                rows = [json.loads(line) for line in batch.splitlines() if line.strip()]
                done[k] += w.extend(rows)

        started = time.monotonic()
        ts = [threading.Thread(target=feed, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        took = time.monotonic() - started
    return sum(done) / took


async def websocket_stream(url: str, frames: list[str], seconds: float, window: int = 8) -> dict:
    from websockets.asyncio.client import connect

    sent_at: dict[int, float] = {}
    lags: list[float] = []
    acked = 0
    events = 0
    per_frame = frames[0].count("\n")
    sem = asyncio.Semaphore(window)
    async with connect(url.replace("http", "ws") + "/v1/ws", max_size=None) as ws:
        stop = time.monotonic() + seconds
        started = time.monotonic()

        async def send() -> None:
            seq = 0
            while time.monotonic() < stop:
                await sem.acquire()
                seq += 1
                sent_at[seq] = time.monotonic()
                await ws.send(frames[seq % len(frames)])

        sender = asyncio.create_task(send())
        while True:
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=max(1.0, stop - time.monotonic() + 5)))
            except TimeoutError:
                break
            if msg["type"] == "ack":
                now = time.monotonic()
                for s in range(acked + 1, msg["seq"] + 1):
                    lags.append(now - sent_at.pop(s))
                    sem.release()
                    events += per_frame
                acked = msg["seq"]
                if sender.done() and not sent_at:
                    break
        took = time.monotonic() - started
        await sender
    lags.sort()
    return {"events_s": events / took, "p50_ms": lags[len(lags) // 2] * 1000, "p99_ms": lags[int(len(lags) * 0.99)] * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ensure_wrk()
    batch_events = make_events(1000, 1)
    batch = ndjson(batch_events)
    singles = [json.dumps(e).encode() for e in make_events(64, 2)]
    frames = [ndjson(make_events(100, 3 + k)).decode() for k in range(8)]
    print(f"input: NDJSON batch of 1,000 events = {len(batch):,} bytes ({len(batch) // 1000} B/event); "
          f"single events {statistics.mean(len(s) for s in singles):.0f} B; WS frames of 100 events; "
          f"event times over 4 h, up to 20 min late; no ids")
    print(f"machine: {os.cpu_count()} cores, shared with other developers' jobs; {load()} at start")
    results: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        results.setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp)
        for rnd in range(args.rounds):
            add("inproc_events_s", in_process(folder / f"inproc{rnd}", batch, args.seconds, threads=4))
            server = Server(folder / f"served{rnd}")
            try:
                cpu = server.cpu()
                r = wrk(server.url + "/v1/events", lua_post([batch], "application/x-ndjson"), connections=4, threads=1,
                        seconds=args.seconds, folder=folder)
                assert r["non2xx"] == 0, r
                add("ndjson_events_s", r["rps"] * 1000)
                add("ndjson_p99_ms", r["p99_ms"])
                add("ndjson_cpu_us_per_event", (server.cpu() - cpu) / (r["rps"] * 1000 * args.seconds) * 1e6)
                cpu = server.cpu()
                r = wrk(server.url + "/v1/events", lua_post(singles, "application/json"), connections=32, threads=2,
                        seconds=args.seconds, folder=folder)
                assert r["non2xx"] == 0, r
                add("single_rps", r["rps"])
                add("single_p50_ms", r["p50_ms"])
                add("single_p99_ms", r["p99_ms"])
                add("single_cpu_us_per_req", (server.cpu() - cpu) / (r["rps"] * args.seconds) * 1e6)
                ws = asyncio.run(websocket_stream(server.url, frames, args.seconds))
                add("ws_events_s", ws["events_s"])
                add("ws_lag_p50_ms", ws["p50_ms"])
                add("ws_lag_p99_ms", ws["p99_ms"])
            finally:
                server.stop()
            print(f"round {rnd + 1}: " + ", ".join(f"{k}={v[-1]:,.1f}" for k, v in results.items()), flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    ratio = med["ndjson_events_s"] / med["inproc_events_s"]
    print(f"\nmedians of {args.rounds} round(s), {args.seconds:g} s each ({load()} at the end):")
    print(f"  NDJSON 1,000-event batches, 4 conns : {med['ndjson_events_s']:>10,.0f} events/s  (p99 {med['ndjson_p99_ms']:.1f} ms per batch)"
          f"   goal >= 100,000 -> {'met' if med['ndjson_events_s'] >= 100_000 else 'MISSED'}")
    print(f"      server CPU per event: {med['ndjson_cpu_us_per_event']:.1f} us "
          f"(= {1e6 / med['ndjson_cpu_us_per_event']:,.0f} events/s per fully available core)")
    print(f"  in-process durable writer, 4 threads: {med['inproc_events_s']:>10,.0f} events/s")
    print(f"  ratio server / in-process           : {ratio:>10.2f}x          goal >= 0.5 -> {'met' if ratio >= 0.5 else 'MISSED'}")
    print(f"  single-event POSTs, 32 conns        : {med['single_rps']:>10,.0f} req/s     goal >= 5,000 -> "
          f"{'met' if med['single_rps'] >= 5000 else 'MISSED'}")
    print(f"      time to 202: p50 {med['single_p50_ms']:.1f} ms, p99 {med['single_p99_ms']:.1f} ms   goal p99 <= 50 ms -> "
          f"{'met' if med['single_p99_ms'] <= 50 else 'MISSED'}")
    print(f"      server CPU per request: {med['single_cpu_us_per_req']:.0f} us "
          f"(= {1e6 / med['single_cpu_us_per_req']:,.0f} req/s per fully available core)")
    print(f"  WebSocket, 100-event frames         : {med['ws_events_s']:>10,.0f} events/s, ack lag p50 {med['ws_lag_p50_ms']:.1f} ms, "
          f"p99 {med['ws_lag_p99_ms']:.1f} ms")


if __name__ == "__main__":
    main()
