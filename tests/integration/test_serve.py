"""`icebergdo serve` as a real server: a subprocess on a free 127.0.0.1 port, real HTTP and WebSocket
clients (httpx, websockets), both backends, results read back with DuckDB.

One server per backend (module scope) carries the tests that only add events under their own
source names; tests that change how the server runs (bounds, signals) start their own.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from icebergdo import Config, Lakehouse
from icebergdo.dev.s3dev import free_ports
from icebergdo.serve.settings import WebhookSource, hash_token
from icebergdo.serve.signatures import sign
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]
TOKEN_FULL, TOKEN_SHOP, TOKEN_CATALOG = "tok-full-" + uuid.uuid4().hex, "tok-shop-" + uuid.uuid4().hex, "tok-cat-" + uuid.uuid4().hex
SECRETS = {
    "stripe": "whsec_" + uuid.uuid4().hex,
    "github": "gh-" + uuid.uuid4().hex,
    "standard": "whsec_" + base64.b64encode(os.urandom(24)).decode(),
    "hmac": "hm-" + uuid.uuid4().hex,
}
WEBHOOKS = {
    "stripe": {"provider": "stripe", "secret": SECRETS["stripe"]},
    "github": {"provider": "github", "secret": SECRETS["github"]},
    "standard": {"provider": "standard", "secret": SECRETS["standard"], "tolerance": 60},
    "hmac": {"provider": "hmac", "secret": SECRETS["hmac"], "header": "X-Shop-Signature", "timestamp_header": "X-Shop-Timestamp"},
}
T0 = 1772359200000  # 2026-03-01T10:00:00Z in epoch ms


# -- helpers ----------------------------------------------------------------------------------------
def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def write_config(config: Config, folder: Path, serve: dict[str, Any]) -> Path:
    """The lakehouse plus a [serve] section as a TOML file for the server subprocess (0600: it holds keys)."""
    if config.home is not None:
        lines = ["[catalog]", f"home = {json.dumps(str(config.home))}"]
    else:
        lines = ["[catalog]", f"uri = {json.dumps(config.catalog_uri)}", f"warehouse = {json.dumps(config.warehouse)}"]
        s3 = config.s3
        assert s3 is not None
        lines += ["[s3]"] + [f"{k} = {toml_value(v)}" for k, v in {
            "endpoint": s3.endpoint, "region": s3.region, "access_key_id": s3.access_key_id,
            "secret_access_key": s3.secret_access_key, "path_style": s3.path_style, "connect_timeout": 2, "request_timeout": 5,
        }.items() if v is not None]
    lines.append("[serve]")
    lines += [f"{k} = {toml_value(v)}" for k, v in serve.items()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"serve-{uuid.uuid4().hex[:6]}.toml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


class Server:
    """`python -m icebergdo --config FILE serve` on a free port; stopped by its own pid."""

    def __init__(self, config_file: Path, log: Path, wal: Path, port: int | None = None) -> None:
        self.config_file, self.log, self.wal = config_file, log, wal
        self.port = port or free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "icebergdo", "-v", "--config", str(config_file), "serve", "--port", str(self.port), "--wal", str(wal)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(log.parent),
            )
        self.wait_up()

    def wait_up(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}"
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"server did not stop within {timeout}s after signal {sig}") from None
        return self.proc.returncode


def start(config: Config, folder: Path, serve: dict[str, Any], *, wal: str = "wal", port: int | None = None) -> Server:
    cfg = write_config(config, folder, serve)
    return Server(cfg, folder / f"server-{uuid.uuid4().hex[:6]}.log", folder / wal, port=port)


def wait_for(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def count(lh: Lakehouse, where: str, params: list[Any] | None = None) -> int:
    if "events.raw" not in lh.tables() or lh.events_table().current_snapshot() is None:
        return 0
    return lh.query(f"SELECT count(*) AS n FROM events WHERE {where}", params).to_pylist()[0]["n"]


def ev(source: str, i: int, **extra: Any) -> dict[str, Any]:
    return {"ts": T0 + i * 1000, "type": "custom", "source": source, "payload": {"i": i, "note": "x" * 40}, **extra}


def auth(token: str = TOKEN_FULL) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


# -- the shared server ------------------------------------------------------------------------------
SHARED_SERVE = {
    "max_age": 0.3, "probe_interval": 0.5, "max_body": 65536, "maintenance": False,
    "tokens": [
        {"name": "full", "sha256": hash_token(TOKEN_FULL)},
        {"name": "shop", "sha256": hash_token(TOKEN_SHOP), "sources": ["shop"], "namespaces": ["shop"]},
        {"name": "catalog-only", "sha256": hash_token(TOKEN_CATALOG), "scopes": ["catalog"]},
    ],
    "webhooks": WEBHOOKS,
    "rate_limits": {"limited": 5},
}


@pytest.fixture(scope="module", params=["local", "s3pg"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Lakehouse]]:
    folder = tmp_path_factory.mktemp(f"serve-{request.param}")
    config = make_config(request, request.param, folder)
    server = start(config, folder, SHARED_SERVE)
    try:
        yield server, Lakehouse.open(config)
    finally:
        code = server.stop()
        assert code == 0, server.log_text()[-3000:]
        for secret in [TOKEN_FULL, TOKEN_SHOP, *SECRETS.values()] + ([config.s3.secret_access_key] if config.s3 else []):
            assert secret not in server.log_text(), "a secret reached the server log"


def test_every_content_type_is_accepted_and_committed(served: tuple[Server, Lakehouse]) -> None:
    server, lh = served
    src = "ct-" + uuid.uuid4().hex[:8]
    with httpx.Client(base_url=server.url, headers=auth(), timeout=30) as c:
        r = c.post("/v1/events", json=ev(src, 0, id=f"{src}-one"))
        assert r.status_code == 202 and r.json() == {"accepted": 1, "ids": [f"{src}-one"]}
        r = c.post("/v1/events", json=[ev(src, i) for i in range(1, 4)])
        assert r.status_code == 202 and r.json()["accepted"] == 3 and len(set(r.json()["ids"])) == 3
        nd = "".join(json.dumps(ev(src, i)) + "\n" for i in range(4, 9)).encode()
        assert c.post("/v1/events", content=nd, headers=NDJSON).json()["accepted"] == 5
        assert c.post("/v1/events", content=gzip.compress(nd), headers={**NDJSON, "Content-Encoding": "gzip"}).json()["accepted"] == 5
        body = json.dumps([ev(src, i) for i in range(9, 11)]).encode()
        assert c.post("/v1/events", content=gzip.compress(body), headers={**JSON, "Content-Encoding": "gzip"}).json()["accepted"] == 2
        assert c.post("/v1/events", content=b"a=1", headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
        assert c.post("/v1/events", content=b"x", headers={**JSON, "Content-Encoding": "br"}).status_code == 415
    wait_for(lambda: count(lh, "source = ?", [src]) == 16, what="16 events committed")
    row = lh.query("SELECT ts, type, payload FROM events WHERE id = ?", [f"{src}-one"]).to_pylist()[0]
    assert row["type"] == "custom" and json.loads(row["payload"]) == {"i": 0, "note": "x" * 40}
    assert int(row["ts"].timestamp() * 1000) == T0
    assert lh.query("SELECT count(DISTINCT id) AS n FROM events WHERE source = ?", [src]).to_pylist()[0]["n"] == 16


def test_a_bad_event_in_a_batch_writes_nothing(served: tuple[Server, Lakehouse]) -> None:
    server, lh = served
    src = "bad-" + uuid.uuid4().hex[:8]
    with httpx.Client(base_url=server.url, headers=auth(), timeout=30) as c:
        batch = [ev(src, i) for i in range(100)]
        batch[57] = {**batch[57], "ts": "not a time"}
        r = c.post("/v1/events", json=batch)
        assert r.status_code == 422
        err = r.json()["error"]
        assert (err["index"], err["field"]) == (57, "ts") and "events[57]" in err["message"]
        lines = [json.dumps(ev(src, i)) for i in range(10)]
        lines[3] = json.dumps({"ts": T0, "source": src})  # no type
        r = c.post("/v1/events", content="\n".join(lines).encode(), headers=NDJSON)
        assert r.status_code == 422 and r.json()["error"]["index"] == 3 and r.json()["error"]["field"] == "type"
        lines[3] = json.dumps({**ev(src, 3), "colour": "red"})
        assert c.post("/v1/events", content="\n".join(lines).encode(), headers=NDJSON).status_code == 422
        lines[3] = '{"ts": 1, "type": '
        r = c.post("/v1/events", content="\n".join(lines).encode(), headers=NDJSON)
        assert r.status_code == 400 and "line 4" in r.json()["error"]["message"]
        assert c.post("/v1/events", content=b"[{", headers=JSON).status_code == 400
        assert c.post("/v1/rpc", json=[{"method": "a"}, {"duration_ms": 3}]).json()["error"]["index"] == 1
        # concurrent requests are validated as one group: the bad one is refused alone, the others are written
        def post(i: int) -> int:
            body = {"ts": "later", "type": "x", "source": src} if i == 5 else ev(src + "-ok", i, id=f"{src}-ok-{i}")
            return httpx.post(server.url + "/v1/events", json=body, headers=auth(), timeout=30).status_code

        codes: dict[int, int] = {}
        threads = [threading.Thread(target=lambda i=i: codes.__setitem__(i, post(i))) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == {i: 422 if i == 5 else 202 for i in range(12)}
        # a marker after the refusals: once it is committed, anything refused before would be too
        assert c.post("/v1/events", json=ev(src + "-marker", 0)).status_code == 202
    wait_for(lambda: count(lh, "source = ?", [src + "-marker"]) == 1, what="the marker")
    assert count(lh, "source = ?", [src]) == 0
    assert count(lh, "source = ?", [src + "-ok"]) == 11


def test_auth_failures_and_token_limits(served: tuple[Server, Lakehouse]) -> None:
    server, lh = served
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/events", json=ev("shop", 0))
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert c.post("/v1/events", json=ev("shop", 0), headers=auth("nope")).status_code == 401
        assert c.post("/v1/events", json=ev("shop", 0), headers={"Authorization": f"Basic {TOKEN_FULL}"}).status_code == 401
        assert c.post("/v1/events", json=ev("shop", 0), headers=auth(TOKEN_CATALOG)).status_code == 401  # catalog scope only
        r = c.post("/v1/events", json=[ev("shop", 0), ev("billing", 1)], headers=auth(TOKEN_SHOP))
        assert r.status_code == 403 and r.json()["error"]["index"] == 1 and r.json()["error"]["field"] == "source"
        r = c.post("/v1/events", json=ev("shop", 0, namespace="hr"), headers=auth(TOKEN_SHOP))
        assert r.status_code == 403 and r.json()["error"]["field"] == "namespace"
        assert c.post("/v1/cdc/hr/people", json={"op": "insert", "id": 1}, headers=auth(TOKEN_SHOP)).status_code == 403
        marker = "auth-" + uuid.uuid4().hex[:8]
        no_source = {"ts": T0, "type": "custom", "payload": {"marker": marker}}
        r = c.post("/v1/events", json=no_source, headers=auth(TOKEN_SHOP))  # the token's one source is filled in
        assert r.status_code == 202
        eid = r.json()["ids"][0]
    wait_for(lambda: count(lh, "id = ? AND source = 'shop'", [eid]) == 1, what="the shop event")
    assert count(lh, "source = 'billing' OR namespace = 'hr'") == 0

    async def ws_without_token() -> None:
        with pytest.raises(InvalidStatus) as err:
            async with ws_connect(server.url.replace("http", "ws") + "/v1/ws"):
                pass
        assert err.value.response.status_code == 403

    asyncio.run(ws_without_token())


def test_body_limit(served: tuple[Server, Lakehouse]) -> None:
    server, lh = served
    src = "big-" + uuid.uuid4().hex[:8]
    big = json.dumps([ev(src, i) for i in range(1000)]).encode()
    assert len(big) > 65536
    with httpx.Client(base_url=server.url, headers=auth(), timeout=30) as c:
        r = c.post("/v1/events", content=big, headers=JSON)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        packed = gzip.compress(big)
        assert len(packed) < 65536  # small on the wire, too big decoded
        assert c.post("/v1/events", content=packed, headers={**JSON, "Content-Encoding": "gzip"}).status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
            for i in range(0, len(big), 8192):
                yield big[i:i + 8192]

        assert c.post("/v1/events", content=chunks(), headers=JSON).status_code == 413
        assert c.post("/v1/events", json=ev(src + "-marker", 0)).status_code == 202
    wait_for(lambda: count(lh, "source = ?", [src + "-marker"]) == 1, what="the marker")
    assert count(lh, "source = ?", [src]) == 0


def _webhook_body(provider: str, tag: str) -> bytes:
    if provider == "stripe":
        return json.dumps({"id": f"evt_{tag}", "object": "event", "created": 1772359200, "type": "invoice.paid"}).encode()
    return json.dumps({"action": "opened", "tag": tag, "number": 7}).encode()


def test_webhook_signatures_valid_tampered_expired_missing(served: tuple[Server, Lakehouse]) -> None:
    server, lh = served
    now = int(time.time())
    stored: dict[str, str] = {}
    with httpx.Client(base_url=server.url, timeout=30) as c:  # no bearer token: webhooks verify signatures instead
        for provider, spec in WEBHOOKS.items():
            src = WebhookSource(provider, "standard" if provider == "standard" else spec["provider"], (SECRETS[provider],),
                                header=spec.get("header", "X-Signature"), timestamp_header=spec.get("timestamp_header"))
            tag = uuid.uuid4().hex[:10]
            body = _webhook_body(provider, tag)
            headers = sign(src, body, now=now, event_id=f"msg_{tag}")
            r = c.post(f"/v1/webhooks/{provider}", content=body, headers={**headers, **JSON})
            assert r.status_code == 202, (provider, r.text)
            stored[provider] = r.json()["ids"][0]
            # the provider retries the same delivery: acknowledged again, stored once
            again = c.post(f"/v1/webhooks/{provider}", content=body, headers={**headers, **JSON})
            if provider != "hmac":  # generic HMAC carries no delivery id
                assert again.status_code == 202 and again.headers.get("idempotent-replayed") == "true"
            tampered = body.replace(b"7", b"8") if provider != "stripe" else body.replace(b"paid", b"void")
            assert c.post(f"/v1/webhooks/{provider}", content=tampered, headers=headers).status_code == 401
            assert c.post(f"/v1/webhooks/{provider}", content=body).json()["error"]["code"] == "bad_signature"  # missing
            if provider != "github":  # GitHub signs no timestamp
                old = sign(src, body, now=now - 3600, event_id=f"msg_{tag}-old")
                r = c.post(f"/v1/webhooks/{provider}", content=body, headers=old)
                assert r.status_code == 401 and "from the server's clock" in r.json()["error"]["message"]
        assert c.post("/v1/webhooks/paypal", content=b"{}").status_code == 404
        metrics = c.get("/metrics").text
    for provider in WEBHOOKS:
        assert f'icebergdo_serve_webhook_signature_failures_total{{reason="mismatch",source="{provider}"}}' in metrics
        assert f'icebergdo_serve_webhook_signature_failures_total{{reason="missing",source="{provider}"}}' in metrics
    for secret in SECRETS.values():
        assert secret not in metrics
    wait_for(lambda: all(count(lh, "id = ?", [eid]) == 1 for eid in stored.values()), what="the webhook events")
    rows = {r["source"]: r for r in lh.query(
        "SELECT id, ts, type, source, payload FROM events WHERE id IN (?, ?, ?, ?)", list(stored.values())).to_pylist()}
    assert set(rows) == set(WEBHOOKS) and all(r["type"] == "webhook" for r in rows.values())
    assert rows["stripe"]["id"].startswith("evt_") and int(rows["stripe"]["ts"].timestamp()) == 1772359200  # id and created
    assert rows["github"]["id"].startswith("msg_") and rows["standard"]["id"].startswith("msg_")
    assert int(rows["standard"]["ts"].timestamp()) == now and int(rows["hmac"]["ts"].timestamp()) == now
    assert json.loads(rows["github"]["payload"])["action"] == "opened"  # the body, verbatim JSON
    # tampered, expired and unsigned deliveries were never stored: one event per provider, plus the
    # generic HMAC retry (that scheme carries no delivery id to recognise it by)
    tags = [json.loads(r["payload"]).get("tag") or json.loads(r["payload"])["id"] for r in rows.values()]
    assert count(lh, "type = 'webhook' AND (" + " OR ".join(["payload LIKE ?"] * len(tags)) + ")", [f"%{t}%" for t in tags]) == 5
    assert count(lh, "type = 'webhook' AND source = 'hmac'") == 2


def test_idempotency_key_replays_and_writes_once(served: tuple[Server, Lakehouse]) -> None:
    server, lh = served
    src = "idem-" + uuid.uuid4().hex[:8]
    key = uuid.uuid4().hex
    with httpx.Client(base_url=server.url, headers=auth(), timeout=30) as c:
        first = c.post("/v1/events", json=[ev(src, 0), ev(src, 1)], headers={"Idempotency-Key": key})
        second = c.post("/v1/events", json=[ev(src, 0), ev(src, 1)], headers={"Idempotency-Key": key})
        assert first.status_code == second.status_code == 202
        assert second.json() == first.json() and second.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        other = c.post("/v1/events", json=[ev(src, 0)], headers={"Idempotency-Key": key + "-2"})
        assert other.status_code == 202
        assert c.post("/v1/events", json=[ev(src, 0)], headers={"Idempotency-Key": "x" * 300}).status_code == 400
    wait_for(lambda: count(lh, "source = ?", [src]) == 3, what="3 events")
    time.sleep(0.8)  # a second commit would have landed by now
    assert count(lh, "source = ?", [src]) == 3


def test_rpc_records_and_cdc_changes(served: tuple[Server, Lakehouse]) -> None:
    server, lh = served
    src = "rpc-" + uuid.uuid4().hex[:8]
    coll = "orders_" + uuid.uuid4().hex[:6]
    with httpx.Client(base_url=server.url, headers=auth(), timeout=30) as c:
        r = c.post("/v1/rpc", json=[
            {"method": "GetUser", "duration_ms": 12.5, "status": 200, "request": {"id": 7}, "response": {"name": "Ann"}, "source": src, "peer": "10.0.0.1"},
            {"method": "ListOrders", "status": "DEADLINE_EXCEEDED", "source": src, "ts": "2026-03-01T10:00:00Z"},
        ])
        assert r.status_code == 202
        assert c.post("/v1/rpc", json={"method": "X", "duration_ms": -1}).json()["error"]["field"] == "duration_ms"
        changes = [
            {"op": "insert", "ts": "2026-03-01T10:00:00Z", "id": "o1", "status": "new", "total": 10},
            {"op": "insert", "ts": "2026-03-01T10:00:00Z", "id": "o2", "status": "new", "total": 20},
            {"op": "update", "ts": "2026-03-01T10:05:00Z", "row": {"id": "o1", "status": "paid", "total": 10}},
            {"op": "delete", "ts": "2026-03-01T10:06:00Z", "id": "o2"},
        ]
        nd = "".join(json.dumps(ch) + "\n" for ch in changes).encode()
        assert c.post(f"/v1/cdc/shop/{coll}", content=nd, headers=NDJSON).status_code == 202
        r = c.post(f"/v1/cdc/shop/{coll}", json=[{"op": "insert", "id": "o3"}, {"op": "upsert", "id": "o4"}])
        assert r.status_code == 422 and r.json()["error"]["index"] == 1 and r.json()["error"]["field"] == "op"
        assert c.post("/v1/cdc/events/x", json={"op": "insert", "id": 1}).status_code == 404  # reserved namespace
        assert c.post("/v1/cdc/Catalog/x", json={"op": "insert", "id": 1}).status_code == 404  # in any case
    wait_for(lambda: count(lh, "source = ? AND type = 'rpc'", [src]) == 2, what="the rpc events")
    rows = lh.query("SELECT payload FROM events WHERE source = ? ORDER BY ts DESC", [src]).to_pylist()
    first = json.loads(rows[0]["payload"])
    assert first == {"method": "GetUser", "duration_ms": 12.5, "status": 200, "request": {"id": 7}, "response": {"name": "Ann"}, "peer": "10.0.0.1"}
    wait_for(lambda: f"shop.{coll}" in lh.tables() and lh.table(f"shop.{coll}").current_snapshot() is not None, what="the collection")
    state = lh.query(f"SELECT id, status FROM shop.{coll} ORDER BY id").to_pylist()
    assert state == [{"id": "o1", "status": "paid"}]
    assert count(lh, "collection = ? AND type LIKE 'cdc.%'", [coll]) == 4


def test_websocket_stream_acks_and_errors(served: tuple[Server, Lakehouse]) -> None:
    server, lh = served
    src = "ws-" + uuid.uuid4().hex[:8]

    async def stream() -> list[dict[str, Any]]:
        frames = [
            json.dumps(ev(src, 0)),
            json.dumps([ev(src, 1), ev(src, 2)]),
            json.dumps(ev(src, 3)) + "\n" + json.dumps(ev(src, 4)),
            json.dumps({"seq": 10, "events": [ev(src, 5)]}),
            json.dumps([ev(src, 6), {"ts": "never", "type": "x", "source": src}]),  # refused whole: error frame
            json.dumps(ev(src, 7)),
        ]
        got: list[dict[str, Any]] = []
        async with ws_connect(server.url.replace("http", "ws") + "/v1/ws", additional_headers=auth()) as ws:
            for f in frames:
                await ws.send(f)
            while not got or got[-1].get("type") != "ack" or got[-1]["seq"] < 12:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        return got

    got = asyncio.run(stream())
    acks = [m for m in got if m["type"] == "ack"]
    errors = [m for m in got if m["type"] == "error"]
    assert [a["seq"] for a in acks] == sorted(a["seq"] for a in acks) and acks[-1]["seq"] == 12
    assert acks[-1]["accepted"] == 7
    assert len(errors) == 1 and errors[0]["seq"] == 11 and errors[0]["error"]["index"] == 1 and errors[0]["error"]["field"] == "ts"
    wait_for(lambda: count(lh, "source = ?", [src]) == 7, what="7 websocket events")


def test_rate_limit_per_source(served: tuple[Server, Lakehouse]) -> None:
    server, _ = served
    with httpx.Client(base_url=server.url, headers=auth(), timeout=30) as c:
        assert c.post("/v1/events", json=[ev("limited", i) for i in range(5)]).status_code == 202
        r = c.post("/v1/events", json=[ev("limited", i) for i in range(5)])
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
        assert c.post("/v1/events", json=[ev("unlimited", i) for i in range(50)]).status_code == 202
        time.sleep(1.1)
        assert c.post("/v1/events", json=[ev("limited", i) for i in range(5)]).status_code == 202


def test_operations_endpoints(served: tuple[Server, Lakehouse]) -> None:
    server, _ = served
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz").json()
        assert ready["ready"] is True and set(ready["checks"]) == {"catalog", "storage", "writer"}
        spec = c.get("/openapi.json").json()
        assert spec["openapi"].startswith("3.") and {"/v1/events", "/v1/webhooks/{source}", "/v1/rpc", "/v1/cdc/{namespace}/{collection}", "/v1/ws"} <= set(spec["paths"])
        text = c.get("/metrics").text
        for name in ("icebergdo_serve_events_accepted_total", "icebergdo_serve_events_committed_total", "icebergdo_serve_events_pending",
                     "icebergdo_serve_wal_bytes", "icebergdo_serve_commit_latency_seconds_bucket", "icebergdo_serve_rejected_total",
                     "icebergdo_serve_ack_seconds_bucket", "icebergdo_serve_ready 1.0"):
            assert name in text, name
        assert TOKEN_FULL not in text and hash_token(TOKEN_FULL) not in text


# -- servers of their own ---------------------------------------------------------------------------
def test_backpressure_answers_429_then_recovers(config: Config, tmp_path: Path) -> None:
    lh = Lakehouse.open(config)
    server = start(config, tmp_path, {"auth": False, "max_rows": 200, "max_pending_rows": 400, "max_age": 0.2, "maintenance": False})
    accepted: list[str] = []
    refused = 0
    retry_after: set[str] = set()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            deadline = time.monotonic() + 60
            i = 0
            while (refused == 0 or len(accepted) < 5) and time.monotonic() < deadline:
                batch = [ev("bp", i * 300 + j, id=f"bp-{i}-{j}") for j in range(300)]
                r = c.post("/v1/events", json=batch)
                if r.status_code == 202:
                    accepted.append(f"bp-{i}")
                else:
                    assert r.status_code == 429 and r.json()["error"]["code"] == "backpressure", r.text
                    refused += 1
                    retry_after.add(r.headers["retry-after"])
                i += 1
            assert refused > 0, "the pending bound was never reached"
            assert all(int(v) >= 1 for v in retry_after)
            # a WebSocket client is paused instead of refused, and resumed once there is room
            frames = asyncio.run(_ws_through_backpressure(server, c))
            # recovery: once the writer catches up, the same client is accepted again
            wait_for(lambda: c.post("/v1/events", json=[ev("bp-after", 0)]).status_code == 202, what="recovery")
        assert server.stop() == 0
    finally:
        server.stop(signal.SIGKILL)
    assert count(lh, "source = 'bp'") == 300 * len(accepted)
    assert count(lh, "source = 'bp-after'") >= 1
    assert count(lh, "source = 'bp-ws'") == 300 * 6
    kinds = [f["type"] for f in frames]
    assert "pause" in kinds and kinds.index("pause") < kinds.index("resume"), kinds
    assert frames[-1] == {"type": "ack", "seq": 6, "accepted": 1800}
    total, distinct = lh.query("SELECT count(*) AS t, count(DISTINCT id) AS d FROM events WHERE source IN ('bp', 'bp-ws')").to_pylist()[0].values()
    assert total == distinct


async def _ws_through_backpressure(server: Server, http: httpx.Client) -> list[dict[str, Any]]:
    """Keep the writer full with HTTP batches while a WebSocket client sends 6 frames of 300 events."""
    got: list[dict[str, Any]] = []
    async with ws_connect(server.url.replace("http", "ws") + "/v1/ws", max_size=None) as ws:
        filler = asyncio.create_task(asyncio.to_thread(
            lambda: [http.post("/v1/events", json=[ev("bp-fill", j) for j in range(300)]) for _ in range(15)]))
        for k in range(6):
            await ws.send(json.dumps([ev("bp-ws", k * 300 + j, id=f"bp-ws-{k}-{j}") for j in range(300)]))
        while not got or got[-1].get("type") != "ack" or got[-1]["seq"] < 6:
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
        await filler
    return got


def test_sigterm_commits_everything_from_two_servers(config: Config, tmp_path: Path) -> None:
    """Two serve processes on one catalog and warehouse, each with its own WAL; nothing commits before SIGTERM."""
    lh = Lakehouse.open(config)
    settings = {"auth": False, "max_age": 600, "maintenance": {"enabled": True, "every": "2s"}}
    a = start(config, tmp_path, settings, wal="wal-a")
    b = start(config, tmp_path, settings, wal="wal-b")
    try:
        sent = 0

        def load(server: Server, tag: str) -> None:
            nonlocal sent
            with httpx.Client(base_url=server.url, timeout=60) as c:
                for i in range(20):
                    assert c.post("/v1/events", json=[ev("term", i * 25 + j, id=f"{tag}-{i}-{j}") for j in range(25)]).status_code == 202
                    sent += 25

        threads = [threading.Thread(target=load, args=(s, tag)) for s, tag in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sent == 1000
        assert count(lh, "source = 'term'") == 0  # max_age 600: all of it is still only in the WALs
        ws_result: dict[str, Any] = {}
        acked = threading.Event()
        ws_thread = threading.Thread(target=lambda: asyncio.run(_ws_until_closed(a, acked, ws_result)))
        ws_thread.start()
        assert acked.wait(30), ws_result
        deadline = time.monotonic() + 30  # in-process maintenance runs on its 2 s schedule while serving
        while "maintenance round" not in a.log_text() + b.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        started = time.monotonic()
        assert a.stop() == 0 and b.stop() == 0
        assert time.monotonic() - started < 60
        ws_thread.join(30)
        assert ws_result["close_code"] == 1012  # "service restart": reconnect and resend what was not acked
    finally:
        a.stop(signal.SIGKILL)
        b.stop(signal.SIGKILL)
    assert "stopped; 501 event(s) committed" in a.log_text() and "stopped; 500 event(s) committed" in b.log_text()
    rows = lh.query("SELECT count(*) AS t, count(DISTINCT id) AS d FROM events WHERE source = 'term'").to_pylist()[0]
    assert rows == {"t": 1000, "d": 1000}
    assert count(lh, "source = 'term-ws'") == 1
    assert not list((tmp_path / "wal-a").rglob("*.arrow")) and not list((tmp_path / "wal-b").rglob("*.arrow"))
    assert "maintenance round" in a.log_text() + b.log_text()  # in-process maintenance ran on its schedule


async def _ws_until_closed(server: Server, acked: threading.Event, result: dict[str, Any]) -> None:
    """One acknowledged frame, then wait for the server to close the connection (it is being stopped)."""
    async with ws_connect(server.url.replace("http", "ws") + "/v1/ws") as ws:
        await ws.send(json.dumps(ev("term-ws", 0)))
        result["ack"] = json.loads(await asyncio.wait_for(ws.recv(), 30))
        acked.set()
        try:
            await asyncio.wait_for(ws.recv(), 60)
        except Exception:  # noqa: BLE001 - the close is what we wait for
            pass
        result["close_code"] = ws.close_code
