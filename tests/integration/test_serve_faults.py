"""`icebergdo serve` under faults: SIGKILL under load, object store down, catalog database not answering.

The servers here are private (own SeaweedFS, own PostgreSQL) where the test stops them: stopping the
session's shared servers would break other tests.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import httpx

from icebergdo import Config, Lakehouse
from icebergdo.dev import s3dev
from tests import servers
from tests.integration.test_serve import Server, count, ev, start, wait_for

KILLS = 4
THREADS = 3


def _load(server: Server, tag: str, acked: list[str], stop: threading.Event) -> None:
    """Post batches of 1-20 events with unique ids until stopped or the server goes away; record what got 202."""
    rng = random.Random(tag)
    i = 0
    with httpx.Client(base_url=server.url, timeout=30) as c:
        while not stop.is_set():
            ids = [f"{tag}-{i}-{j}" for j in range(rng.randint(1, 20))]
            try:
                r = c.post("/v1/events", json=[ev("kill", i, id=eid) for eid in ids])
            except httpx.TransportError:
                return  # killed: this request's outcome is unknown, and it was not acknowledged
            if r.status_code == 202:
                acked.extend(ids)  # only after the 202: durable
            i += 1


def test_sigkill_four_times_under_load_loses_and_duplicates_nothing(config: Config, tmp_path: Path) -> None:
    lh = Lakehouse.open(config)
    settings = {"auth": False, "max_age": 0.2, "max_rows": 2000, "maintenance": False}
    acked: list[str] = []
    rng = random.Random(12)
    for rnd in range(KILLS):
        server = start(config, tmp_path, settings)  # same WAL folder every round: each start replays the last
        stop = threading.Event()
        threads = [threading.Thread(target=_load, args=(server, f"r{rnd}t{k}", acked, stop)) for k in range(THREADS)]
        try:
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.5, 1.5))  # lands in requests, fsyncs, seals or commits
        finally:
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(30)
            stop.set()
            for t in threads:
                t.join(60)
        assert server.proc.returncode == -signal.SIGKILL
    final = start(config, tmp_path, settings)  # replays what the last round left, then a clean stop
    assert final.stop() == 0, final.log_text()[-3000:]
    assert len(acked) > 200, "too few events acknowledged for a meaningful test"
    rows = lh.query("SELECT id FROM events WHERE source = 'kill'").column("id").to_pylist()
    assert len(rows) == len(set(rows)), f"{len(rows) - len(set(rows))} event(s) committed twice"
    missing = set(acked) - set(rows)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    # present but never acknowledged: at most the requests in flight at each kill (20 events each)
    assert len(set(rows) - set(acked)) <= KILLS * THREADS * 20
    assert not list((tmp_path / "wal").rglob("*.arrow")), "WAL segments left after the clean stop"


def _post(server: Server, source: str, n: int) -> httpx.Response:
    return httpx.post(server.url + "/v1/events", json=[ev(source, i, id=f"{source}-{i}") for i in range(n)], timeout=30)


def _ready(server: Server) -> int:
    return httpx.get(server.url + "/readyz", timeout=30).status_code


def test_object_store_down_then_back(postgres: servers.Postgres, tmp_path: Path) -> None:
    """A private SeaweedFS stops: /readyz fails, requests get 503; it comes back: everything acknowledged is committed once."""
    folder = tmp_path / "s3"
    s3 = servers.start_seaweedfs(folder)
    server = None
    try:
        bucket = s3.create_bucket("serve-down")
        config = Config.from_dict({"catalog": {"uri": postgres.create_database("serve_down"), "warehouse": f"s3://{bucket}/lake"},
                                   "s3": s3.s3_settings()}, source="serve faults")
        lh = Lakehouse.open(config)
        server = start(config, tmp_path, {"auth": False, "max_age": 0.3, "probe_interval": 0.5, "probe_timeout": 3, "maintenance": False})
        assert _post(server, "before", 50).status_code == 202
        wait_for(lambda: count(lh, "source = 'before'") == 50, what="the first events")
        port = s3.s3_port
        s3.stop()
        # acknowledged in the moment before the probe notices: durable in the WAL, committed after recovery
        during = [f"during-{i}" for i in range(20) if _post(server, f"during-{i}", 5).status_code == 202]
        wait_for(lambda: _ready(server) == 503, timeout=30, what="/readyz to fail")
        body = httpx.get(server.url + "/readyz", timeout=30).json()
        assert body["ready"] is False and body["checks"]["storage"] != "ok"
        r = _post(server, "refused", 5)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "unavailable"
        secret = config.s3.secret_access_key
        assert secret and secret not in r.text and secret not in httpx.get(server.url + "/readyz").text

        s3 = s3dev.start(folder, s3_port=port)  # same data folder, port and keys
        wait_for(lambda: _ready(server) == 200, timeout=60, what="/readyz to recover")
        assert _post(server, "after", 10).status_code == 202
        assert server.stop() == 0, server.log_text()[-3000:]
        server = None
        assert count(lh, "source = 'before'") == 50 and count(lh, "source = 'after'") == 10
        assert count(lh, "source = 'refused'") == 0
        for src in during:
            assert count(lh, "source = ?", [src]) == 5, src
        total = lh.query("SELECT count(*) AS t, count(DISTINCT id) AS d FROM events").to_pylist()[0]
        assert total["t"] == total["d"]
    finally:
        if server is not None:
            server.stop(signal.SIGKILL)
        s3.stop()


def test_catalog_database_not_answering(seaweedfs: servers.SeaweedFS, tmp_path: Path) -> None:
    """A private PostgreSQL stops accepting connections (SIGSTOP): not ready, 503; SIGCONT: ready, nothing lost."""
    pg = servers.start_postgres(tmp_path / "pg")
    server = None
    stopped = False
    try:
        bucket = seaweedfs.create_bucket("icebergdo-tests")
        config = Config.from_dict({"catalog": {"uri": pg.create_database("serve_pg"), "warehouse": f"s3://{bucket}/pgdown-{os.getpid()}"},
                                   "s3": seaweedfs.s3_settings()}, source="serve faults")
        lh = Lakehouse.open(config)
        server = start(config, tmp_path, {"auth": False, "max_age": 0.3, "probe_interval": 0.5, "probe_timeout": 2, "maintenance": False})
        assert _post(server, "before", 20).status_code == 202
        os.kill(pg.pid, signal.SIGSTOP)
        stopped = True
        wait_for(lambda: _ready(server) == 503, timeout=30, what="/readyz to fail")
        checks = httpx.get(server.url + "/readyz", timeout=30).json()["checks"]
        assert checks["catalog"] != "ok" or "probe" in checks, checks  # refused, timed out, or still hanging
        assert _post(server, "refused", 5).status_code == 503
        os.kill(pg.pid, signal.SIGCONT)
        stopped = False
        wait_for(lambda: _ready(server) == 200, timeout=60, what="/readyz to recover")
        assert _post(server, "after", 20).status_code == 202
        assert server.stop() == 0, server.log_text()[-3000:]
        server = None
        assert count(lh, "source = 'before'") == 20 and count(lh, "source = 'after'") == 20 and count(lh, "source = 'refused'") == 0
    finally:
        if stopped:
            os.kill(pg.pid, signal.SIGCONT)
        if server is not None:
            server.stop(signal.SIGKILL)
        pg.stop()
