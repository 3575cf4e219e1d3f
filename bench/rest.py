"""The REST catalog's cost, measured side by side in one run against the direct SQL catalog.

    python bench/rest.py                         # defaults: 40 commits per side, 1,000 snapshots, 200k events
    python bench/rest.py --snapshots 200         # a quicker run

1. Commit latency: `lh.append_events` of one realistic batch through a `type = "rest"` lakehouse
   (our server in its own process, `python -m icebergdo.restcatalog`) vs the same lakehouse opened
   directly on its SQLite catalog; alternating, same table, medians. Also a metadata-only commit
   (one table property) to show the catalog round trip alone. Goal: REST <= 1.3x direct.
2. loadTable latency of a table with N snapshots (default 1,000): pyiceberg `RestCatalog.load_table`
   vs `SqlCatalog.load_table`, medians.
3. DuckDB: `ATTACH` (our REST catalog) + a query vs `iceberg_scan(metadata_location)` + the same
   query, each on a fresh connection with the extensions loaded; and the query alone on an open
   connection. Goal: ATTACH + query <= 1.1x iceberg_scan.

Input shape: events without ids, event times spread over 6 hours and up to 20 minutes late / out of
order, JSON payloads of a few hundred bytes; the defaults a user gets (embedded folder + SQLite,
default table properties; post-commit upkeep off, since both sides commit to one table). The machine's load is not controlled: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import requests

from icebergdo import Config, Lakehouse
from icebergdo.dev.s3dev import free_ports
from icebergdo.engines import duck
from icebergdo.restcatalog.settings import new_token, token_hash

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 1, 6, tzinfo=UTC)


def make_events(n: int, seed: int = 7) -> list[dict]:
    """Realistic: no ids, 6 hours, up to 20 minutes late, payloads of a few hundred bytes."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0 + timedelta(seconds=i * 6 * 3600 / n) - timedelta(seconds=rng.uniform(0, 1200))
        payload = {"order": f"ord_{rng.getrandbits(48):012x}", "amount": rng.randint(100, 99_999), "currency": "EUR",
                   "customer": {"id": f"cus_{rng.getrandbits(40):010x}", "country": rng.choice(["DE", "FR", "NL", "US"])},
                   "items": [{"sku": f"sku-{rng.randint(1, 500)}", "qty": rng.randint(1, 4)} for _ in range(rng.randint(1, 4))]}
        out.append({"ts": ts.isoformat(), "type": rng.choice(["webhook", "rpc", "ws", "custom"]),
                    "source": rng.choice(["stripe", "shop", "crm", "app"]), "payload": payload})
    return out


def start_server(config: Config, folder: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    token = new_token()
    path = folder / "served.toml"
    path.write_text(
        f'[catalog]\nuri = "{config.catalog_uri}"\nwarehouse = "{config.warehouse}"\n'
        f'[serve.catalog]\nenabled = true\n[[serve.catalog.tokens]]\nname = "bench"\nsha256 = "{token_hash(token)}"\nscope = "write"\n'
    )
    (port,) = free_ports(1)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "icebergdo.restcatalog", "--config", str(path), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    uri = f"http://127.0.0.1:{port}/catalog"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"{uri}/v1/config", timeout=1)
            return proc, uri, token
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the REST catalog server did not start")


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def alternate(rounds: int, a: Callable[[], object], b: Callable[[], object]) -> tuple[list[float], list[float]]:
    """Time a and b alternately (a first on even rounds, b first on odd), so load hits both alike."""
    ta: list[float] = []
    tb: list[float] = []
    for i in range(rounds):
        for fn, sink in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            start = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - start)
    return ta, tb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commits", type=int, default=40, help="commits per side (default %(default)s)")
    ap.add_argument("--batch", type=int, default=1_000, help="events per commit (default %(default)s)")
    ap.add_argument("--snapshots", type=int, default=1_000, help="snapshots of the loadTable table (default %(default)s)")
    ap.add_argument("--loads", type=int, default=15, help="loadTable calls per side (default %(default)s)")
    ap.add_argument("--events", type=int, default=200_000, help="events in the DuckDB table (default %(default)s)")
    ap.add_argument("--queries", type=int, default=9, help="DuckDB runs per side (default %(default)s)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    folder = Path(tempfile.mkdtemp(prefix="icebergdo-bench-rest-"))
    print(f"REST catalog benchmark: python {sys.version.split()[0]}, pyarrow {pa.__version__}, embedded lakehouse (folder + SQLite), "
          "server in its own process on 127.0.0.1; machine load not controlled")
    try:
        direct = Lakehouse.open(folder / "lh")
        direct.events_table()
        proc, uri, token = start_server(direct.config, folder)
        try:
            remote = Lakehouse.open(Config.from_dict({"catalog": {"type": "rest", "uri": uri, "token": token, "warehouse": direct.config.warehouse}}))
            # Both sides commit to one table: post-commit upkeep rounds (expiry, manifest merges) would
            # land between the measured commits and make the other side's next commit conflict and retry.
            direct.upkeep.enabled = remote.upkeep.enabled = False
            batches = [make_events(args.batch, seed=i) for i in range(4)]
            print(f"\n1. commit latency: lh.append_events of {args.batch:,} events per commit (6 h span, <= 20 min late, "
                  f"~{len(json.dumps(batches[0][0]['payload']))} B payloads), {args.commits} commits per side, alternating")
            n = iter(range(10**9))
            t_direct, t_rest = alternate(args.commits, lambda: direct.append_events(batches[next(n) % 4]), lambda: remote.append_events(batches[next(n) % 4]))
            print(f"   direct SQL catalog   {median_ms(t_direct):8.1f} ms")
            print(f"   through REST         {median_ms(t_rest):8.1f} ms   ratio {statistics.median(t_rest) / statistics.median(t_direct):.2f}x (goal <= 1.3x)")
            d_table, r_table = direct.table("events.raw"), remote.table("events.raw")
            k = iter(range(10**9))

            def prop(t: object) -> None:
                with t.transaction() as tx:  # type: ignore[attr-defined]
                    tx.set_properties({"bench.n": str(next(k))})

            t_direct, t_rest = alternate(args.commits, lambda: prop(d_table), lambda: prop(r_table))
            print(f"   metadata-only commit (one property): direct {median_ms(t_direct):.1f} ms, REST {median_ms(t_rest):.1f} ms, "
                  f"ratio {statistics.median(t_rest) / statistics.median(t_direct):.2f}x")

            print(f"\n2. loadTable of a table with {args.snapshots:,} snapshots")
            tiny = pa.table({"id": pa.array([1], pa.int64())})
            hist = direct.create_table("bench.history", tiny.schema, data_path="bench/history")
            start = time.perf_counter()
            for _ in range(args.snapshots):
                hist.append(tiny)
            print(f"   (built in {time.perf_counter() - start:.0f} s; metadata file {len(hist.metadata.model_dump_json()) / 1e6:.1f} MB)")
            t_direct, t_rest = alternate(args.loads, lambda: direct.catalog.load_table("bench.history"), lambda: remote.catalog.load_table("bench.history"))
            print(f"   SqlCatalog.load_table   {median_ms(t_direct):8.1f} ms")
            print(f"   RestCatalog.load_table  {median_ms(t_rest):8.1f} ms   ratio {statistics.median(t_rest) / statistics.median(t_direct):.2f}x")

            print(f"\n3. DuckDB over events.raw with {args.events:,} events (+ the commits above)")
            for i in range(0, args.events, 50_000):
                direct.append_events(make_events(min(50_000, args.events - i), seed=100 + i))
            location = direct.table("events.raw").metadata_location
            query = "SELECT type, count(*), count(DISTINCT source), max(length(payload)) FROM {} GROUP BY 1 ORDER BY 1"
            endpoint = duck.CatalogEndpoint(uri=uri, warehouse=direct.config.warehouse, token=token)

            def with_attach() -> object:
                con = duck.connect_catalog(direct.config, endpoint)
                return con.execute(query.format("icebergdo.events.raw")).fetchall()

            def with_scan() -> object:
                con = duck.connect(direct.config)
                return con.execute(query.format(f"iceberg_scan('{location}')")).fetchall()

            assert with_attach() == with_scan()
            t_scan, t_attach = alternate(args.queries, with_scan, with_attach)
            print(f"   connect + iceberg_scan(metadata_location) + query  {median_ms(t_scan):8.1f} ms")
            print(f"   connect + ATTACH (REST) + query                  {median_ms(t_attach):8.1f} ms   "
                  f"ratio {statistics.median(t_attach) / statistics.median(t_scan):.2f}x (goal <= 1.1x)")
            con_a, con_s = duck.connect_catalog(direct.config, endpoint), duck.connect(direct.config)
            t_scan, t_attach = alternate(args.queries, lambda: con_s.execute(query.format(f"iceberg_scan('{location}')")).fetchall(),
                                         lambda: con_a.execute(query.format("icebergdo.events.raw")).fetchall())
            print(f"   query alone on an open connection: iceberg_scan {median_ms(t_scan):.1f} ms, attached {median_ms(t_attach):.1f} ms, "
                  f"ratio {statistics.median(t_attach) / statistics.median(t_scan):.2f}x")
        finally:
            proc.terminate()
            proc.wait(20)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
