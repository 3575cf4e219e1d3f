"""The REST catalog server, driven by clients that are not ours: pyiceberg's RestCatalog, DuckDB's ATTACH, raw HTTP.

The server runs as its own process (`python -m icebergdo.restcatalog`) on 127.0.0.1, backed by each
backend (SQLite + folder, PostgreSQL + SeaweedFS), with a write token, a read token and an OAuth2
client from `[serve.catalog]`. Results are read back by icebergdo directly (SQL catalog) and by
DuckDB's `iceberg_scan` of the metadata file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
import requests
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.exceptions import ForbiddenError, NoSuchTableError, OAuthError, UnauthorizedError
from pyiceberg.types import StringType

from icebergdo import Config, Lakehouse, commit
from icebergdo.dev.s3dev import free_ports
from icebergdo.engines.duck import connect, extension_path
from icebergdo.restcatalog.settings import new_token, token_hash
from tests.integration import procs

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    uri: str
    write_token: str
    read_token: str
    client_id: str
    client_secret: str
    read_client_id: str
    log: Path
    proc: subprocess.Popen[bytes]
    storage: dict[str, str]  # the client's own S3 keys: the catalog hands out no credentials

    def catalog(self, **props: str) -> RestCatalog:
        return RestCatalog("served", uri=self.uri, **self.storage, **props)

    def logged(self) -> str:
        return self.log.read_text(errors="replace")


def config_toml(config: Config, serve: str) -> str:
    """A TOML file for `config` plus a [serve.catalog] section."""
    return "\n".join(procs.config_lines(config)) + "\n" + serve


def start_server(config: Config, tmp_path: Path, *, extra: str = "") -> Served:
    write, read = new_token(), new_token()
    client_secret, read_secret = new_token(), new_token()
    serve = f"""
[serve.catalog]
enabled = true
token_ttl = 600
{extra}
[[serve.catalog.tokens]]
name = "writer"
sha256 = "{token_hash(write)}"
scope = "write"
[[serve.catalog.tokens]]
name = "reader"
sha256 = "{token_hash(read)}"
scope = "read"
[[serve.catalog.clients]]
client_id = "engine"
secret_sha256 = "{token_hash(client_secret)}"
scope = "write"
[[serve.catalog.clients]]
client_id = "dashboards"
secret_sha256 = "{token_hash(read_secret)}"
scope = "read"
"""
    path = tmp_path / "served.toml"
    path.write_text(config_toml(config, serve))
    (port,) = free_ports(1)
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "icebergdo.restcatalog", "--config", str(path), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )
    uri = f"http://127.0.0.1:{port}/catalog"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{uri}/v1/config", timeout=2).status_code == 401:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"REST catalog server did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    storage = {k: v for k, v in config.s3.fileio_properties().items() if k.startswith("s3.")} if config.s3 else {}
    return Served(uri, write, read, "engine", client_secret, "dashboards", log, proc, storage)


@pytest.fixture
def served(config: Config, tmp_path: Path) -> Iterator[Served]:
    server = start_server(config, tmp_path)
    try:
        yield server
    finally:
        server.proc.terminate()
        try:
            server.proc.wait(20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(5)


def event(i: int, hour: int = 10) -> dict:
    return {"ts": f"2026-11-25T{hour:02d}:{i % 60:02d}:00Z", "type": "webhook", "source": "stripe", "payload": {"n": i}}


def scan_rows(lh: Lakehouse, name: str, order: str) -> list[tuple]:
    """Rows of `name` read by DuckDB from the metadata file the SQL catalog names (not through the server)."""
    tbl = lh.table(name)
    con = connect(lh.config)
    return con.execute(f"SELECT * FROM iceberg_scan('{tbl.metadata_location}') ORDER BY {order}").fetchall()


# -- pyiceberg RestCatalog ----------------------------------------------------------------------
def test_pyiceberg_client_creates_appends_evolves_renames_and_drops(lh: Lakehouse, served: Served) -> None:
    cat = served.catalog(token=served.write_token)
    cat.create_namespace("shop")
    assert ("shop",) in cat.list_namespaces()
    table = cat.create_table("shop.orders", schema=pa.schema([("id", pa.string()), ("amount", pa.int64())]))
    # Our defaults, since the client gave no location: ADR layout and commit retries.
    assert table.properties["commit.retry.num-retries"] == "20"
    assert table.properties["write.data.path"] == f"{lh.config.warehouse}/shop/orders/data"
    assert table.location() == f"{lh.config.warehouse}/catalog/shop.orders"
    table.append(pa.table({"id": ["o1", "o2"], "amount": [10, 20]}))
    with table.update_schema() as update:
        update.add_column("status", StringType())
    table.append(pa.table({"id": ["o3"], "amount": [30], "status": ["paid"]}))

    # icebergdo sees the same table through the SQL catalog; DuckDB reads the files.
    assert [f.name for f in lh.table("shop.orders").schema().fields] == ["id", "amount", "status"]
    assert scan_rows(lh, "shop.orders", "id") == [("o1", 10, None), ("o2", 20, None), ("o3", 30, "paid")]
    files = [t.file.file_path for t in lh.table("shop.orders").scan().plan_files()]
    assert files and all(f.startswith(f"{lh.config.warehouse}/shop/orders/data/") for f in files)

    # icebergdo's own commit is visible to the REST client.
    lh.append("shop.orders", pa.table({"id": ["o4"], "amount": [40], "status": ["new"]}))
    assert cat.load_table("shop.orders").scan().to_arrow().num_rows == 4

    cat.rename_table("shop.orders", "shop.orders_v2")
    assert "shop.orders_v2" in lh.tables() and "shop.orders" not in lh.tables()
    with pytest.raises(NoSuchTableError):
        cat.load_table("shop.orders")
    cat.drop_table("shop.orders_v2")
    assert "shop.orders_v2" not in lh.tables()
    assert not cat.table_exists("shop.orders_v2")


def test_staged_create_gets_our_defaults_and_client_properties_win(lh: Lakehouse, served: Served) -> None:
    cat = served.catalog(token=served.write_token)
    cat.create_namespace("stage")
    tx = cat.create_table_transaction("stage.t", schema=pa.schema([("id", pa.string())]), properties={"commit.retry.num-retries": "7"})
    tx.append(pa.table({"id": ["a", "b"]}))
    tx.commit_transaction()
    props = lh.table("stage.t").properties
    assert props["commit.retry.num-retries"] == "7"  # the client's
    assert props["write.parquet.compression-codec"] == "zstd" and props["write.data.path"].endswith("/stage/t/data")
    assert scan_rows(lh, "stage.t", "id") == [("a",), ("b",)]


def test_two_clients_commit_concurrently_one_retries_none_lost(lh: Lakehouse, served: Served) -> None:
    lh.append_events([event(0)])
    a = served.catalog(token=served.write_token).load_table("events.raw")
    b = served.catalog(token=served.write_token).load_table("events.raw")  # both at the same snapshot
    batch = lh.table("events.raw").scan().to_arrow()
    a.append(batch)
    commit.stats(reset=True)
    b.append(batch)  # stale: its first attempt fails the assert-ref-snapshot-id requirement (409), pyiceberg retries
    assert commit.stats().get("pyiceberg_conflict_retries", 0) >= 1
    assert lh.table("events.raw").scan().to_arrow().num_rows == 3

    # And many commits from two clients in two threads, interleaved with icebergdo's own: nothing lost.
    errors: list[BaseException] = []

    def client(n: int) -> None:
        table = served.catalog(token=served.write_token).load_table("events.raw")
        try:
            for _ in range(n):
                table.append(batch)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=client, args=(6,)) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(4):
        lh.append_events([event(i + 1)])
    for t in threads:
        t.join(120)
    assert not errors
    assert len(scan_rows(lh, "events.raw", "ts")) == 3 + 2 * 6 + 4


def test_failing_requirement_is_409_with_the_spec_error_body(lh: Lakehouse, served: Served) -> None:
    lh.append_events([event(0)])
    headers = {"Authorization": f"Bearer {served.write_token}"}
    table = lh.table("events.raw")
    body = {
        "identifier": {"namespace": ["events"], "name": "raw"},
        "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": 1234567}],
        "updates": [{"action": "set-properties", "updates": {"x": "y"}}],
    }
    r = requests.post(f"{served.uri}/v1/namespaces/events/tables/raw", json=body, headers=headers, timeout=30)
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["type"] == "CommitFailedException" and error["code"] == 409 and "main" in error["message"]
    assert lh.table("events.raw").metadata_location == table.metadata_location  # nothing committed

    body["requirements"] = [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": table.metadata.current_snapshot_id}]
    r = requests.post(f"{served.uri}/v1/namespaces/events/tables/raw", json=body, headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["metadata-location"] != table.metadata_location
    assert lh.table("events.raw").properties["x"] == "y"

    # Unknown update → 400; missing table → 404, both in the error model.
    bad = requests.post(f"{served.uri}/v1/namespaces/events/tables/raw", json={"updates": [{"action": "explode"}]}, headers=headers, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "BadRequestException"
    missing = requests.get(f"{served.uri}/v1/namespaces/events/tables/nope", headers=headers, timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NoSuchTableException"


def test_multi_table_transaction_is_all_or_nothing(lh: Lakehouse, served: Served) -> None:
    cat = served.catalog(token=served.write_token)
    cat.create_namespace("tx")
    for name in ("a", "b"):
        cat.create_table(f"tx.{name}", schema=pa.schema([("id", pa.string())]))
    before = {n: lh.table(f"tx.{n}").metadata_location for n in ("a", "b")}
    headers = {"Authorization": f"Bearer {served.write_token}"}

    def change(name: str, uuid: str) -> dict:
        return {
            "identifier": {"namespace": ["tx"], "name": name},
            "requirements": [{"type": "assert-table-uuid", "uuid": uuid}],
            "updates": [{"action": "set-properties", "updates": {"batch": "1"}}],
        }

    uuid_a, uuid_b = (str(lh.table(f"tx.{n}").metadata.table_uuid) for n in ("a", "b"))
    wrong = {"table-changes": [change("a", uuid_a), change("b", uuid_a)]}  # b's requirement fails
    r = requests.post(f"{served.uri}/v1/transactions/commit", json=wrong, headers=headers, timeout=30)
    assert r.status_code == 409 and r.json()["error"]["type"] == "CommitFailedException"
    assert {n: lh.table(f"tx.{n}").metadata_location for n in ("a", "b")} == before  # a did not move either

    right = {"table-changes": [change("a", uuid_a), change("b", uuid_b)]}
    r = requests.post(f"{served.uri}/v1/transactions/commit", json=right, headers=headers, timeout=30)
    assert r.status_code == 204
    assert all(lh.table(f"tx.{n}").properties["batch"] == "1" for n in ("a", "b"))


# -- auth -----------------------------------------------------------------------------------------
def test_auth_401_403_client_credentials_and_no_token_in_logs(lh: Lakehouse, served: Served) -> None:
    lh.append_events([event(0)])
    r = requests.get(f"{served.uri}/v1/namespaces", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["type"] == "NotAuthorizedException" and r.json()["error"]["code"] == 401
    r = requests.get(f"{served.uri}/v1/namespaces", headers={"Authorization": "Bearer not-a-token"}, timeout=10)
    assert r.status_code == 401
    with pytest.raises(UnauthorizedError):
        served.catalog()

    reader = served.catalog(token=served.read_token)
    assert reader.load_table("events.raw").scan().to_arrow().num_rows == 1  # reading is allowed
    with pytest.raises(ForbiddenError):
        reader.create_namespace("nope")
    with pytest.raises(ForbiddenError):
        reader.load_table("events.raw").append(lh.table("events.raw").scan().to_arrow())
    assert "nope" not in [ns[0] for ns in lh.catalog.list_namespaces()]

    # OAuth2 client credentials (what DuckDB, Spark and pyiceberg clients do), scopes per client.
    oauth = f"{served.uri}/v1/oauth/tokens"
    engine = served.catalog(credential=f"{served.client_id}:{served.client_secret}", **{"oauth2-server-uri": oauth})
    engine.create_namespace("granted")
    with pytest.raises((OAuthError, UnauthorizedError)):  # the read client with the write client's secret
        served.catalog(credential=f"{served.read_client_id}:{served.client_secret}", **{"oauth2-server-uri": oauth}).list_namespaces()
    r = requests.post(oauth, data={"grant_type": "client_credentials", "client_id": "engine", "client_secret": served.client_secret, "scope": "read"}, timeout=10)
    narrowed = r.json()["access_token"]
    assert r.json()["scope"] == "read"
    r = requests.post(f"{served.uri}/v1/namespaces", json={"namespace": ["x"]}, headers={"Authorization": f"Bearer {narrowed}"}, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["type"] == "ForbiddenException"
    r = requests.post(oauth, data={"grant_type": "client_credentials", "client_id": "engine", "client_secret": "wrong"}, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"

    log = served.logged()
    for secret in (served.write_token, served.read_token, served.client_secret):
        assert secret not in log


# -- DuckDB ATTACH --------------------------------------------------------------------------------
def duck_attached(lh: Lakehouse, served: Served):  # -> duckdb connection
    con = connect(lh.config)
    if not lh.config.is_s3:
        con.execute(f"LOAD '{extension_path('httpfs')}'")
    con.execute(
        f"CREATE SECRET cat (TYPE iceberg, CLIENT_ID '{served.client_id}', CLIENT_SECRET '{served.client_secret}', "
        f"OAUTH2_SERVER_URI '{served.uri}/v1/oauth/tokens')"
    )
    con.execute(f"ATTACH 'lake' AS lake (TYPE iceberg, ENDPOINT '{served.uri}', SECRET cat, ACCESS_DELEGATION_MODE 'none')")
    return con


def test_duckdb_attach_lists_reads_writes_and_stays_live(lh: Lakehouse, served: Served) -> None:
    lh.append_events([event(i, hour=10 + i % 3) for i in range(30)])
    orders = lh.collection("shop", "orders", key=["id"])
    orders.apply([
        {"op": "insert", "ts": "2026-11-25T10:00:00Z", "id": "o1", "status": "new"},
        {"op": "insert", "ts": "2026-11-25T10:01:00Z", "id": "o2", "status": "new"},
        {"op": "update", "ts": "2026-11-25T10:05:00Z", "id": "o1", "status": "paid"},
    ])
    con = duck_attached(lh, served)
    tables = {(r[0], r[1], r[2]) for r in con.execute("SHOW ALL TABLES").fetchall()}
    assert {("lake", "events", "raw"), ("lake", "shop", "orders"), ("lake", "shop", "orders__deltas")} <= tables

    assert con.execute("SELECT * FROM lake.events.raw ORDER BY id").fetchall() == scan_rows(lh, "events.raw", "id")
    state = con.execute("SELECT id, status FROM lake.shop.orders ORDER BY id").fetchall()
    assert state == [("o1", "paid"), ("o2", "new")]
    assert con.execute("SELECT * FROM lake.shop.orders ORDER BY id").fetchall() == scan_rows(lh, "shop.orders", "id")

    # A new icebergdo commit is visible in the attached catalog without re-attaching.
    lh.append_events([event(59, hour=12)])
    assert con.execute("SELECT count(*) FROM lake.events.raw").fetchone()[0] == 31

    # DuckDB writes through the catalog; icebergdo reads it back.
    con.execute("CREATE SCHEMA IF NOT EXISTS lake.duck")
    con.execute("CREATE TABLE lake.duck.notes (id INTEGER, note VARCHAR)")
    con.execute("INSERT INTO lake.duck.notes VALUES (1, 'one'), (2, 'two')")
    assert lh.table("duck.notes").scan().to_arrow().sort_by("id").to_pylist() == [{"id": 1, "note": "one"}, {"id": 2, "note": "two"}]
    assert lh.table("duck.notes").properties["commit.retry.num-retries"] == "20"  # our defaults on a table DuckDB created
    assert lh.query("SELECT count(*) AS n FROM duck.notes").to_pylist() == [{"n": 2}]


def test_lakehouse_duckdb_is_live(lh: Lakehouse) -> None:
    lh.append_events([event(0)])
    con = lh.duckdb()
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    lh.append_events([event(1)])
    lh.collection("shop", "carts", key=["id"]).apply([{"op": "insert", "ts": "2026-11-25T10:00:00Z", "id": "c1"}])
    # The same connection sees the new commit and the table created after it was opened.
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 2
    assert con.execute("SELECT count(*) FROM events.raw").fetchone()[0] == 2
    assert con.execute("SELECT id FROM shop.carts").fetchall() == [("c1",)]
    stale = lh.duckdb(live=False)
    lh.append_events([event(2)])
    assert stale.execute("SELECT count(*) FROM events").fetchone()[0] == 2 and con.execute("SELECT count(*) FROM events").fetchone()[0] == 3


# -- icebergdo against the server ------------------------------------------------------------------
def test_icebergdo_on_the_served_catalog(lh: Lakehouse, served: Served, config: Config) -> None:
    raw = {"catalog": {"type": "rest", "uri": served.uri, "token": served.write_token, "warehouse": config.warehouse}}
    if config.s3 is not None:
        raw["s3"] = {"endpoint": config.s3.endpoint, "region": config.s3.region, "access_key_id": config.s3.access_key_id,
                     "secret_access_key": config.s3.secret_access_key}
    remote = Lakehouse.open(Config.from_dict(raw, source="rest client"))
    r = remote.append_events([event(i) for i in range(5)], batch_id="b-1")
    again = remote.append_events([event(i) for i in range(5)], batch_id="b-1")
    assert r.rows == 5 and again.already_committed
    assert len(scan_rows(lh, "events.raw", "id")) == 5
    files = [t.file.file_path for t in lh.table("events.raw").scan().plan_files()]
    assert files and all("/events/2026/11/25/10/" in f for f in files)  # the ADR layout, written through REST
    assert "rest client" in repr(remote) and served.write_token not in repr(remote.config)

    from icebergdo.dev.checks import check_catalog  # `icebergdo doctor` on a REST config

    assert check_catalog(remote.config).ok
    bad = Config.from_dict({**raw, "catalog": {**raw["catalog"], "token": "wrong-" + served.read_token}}, source="bad token")
    verdict = check_catalog(bad)
    assert not verdict.ok and ("NotAuthorized" in verdict.detail or "Unauthorized" in verdict.detail), verdict.detail
    assert served.read_token not in verdict.detail


# -- plain pyiceberg (no icebergdo installed) on our tables ----------------------------------------
FOREIGN_WRITER = r"""
import json, sys

class NoIcebergdo:  # this interpreter has no icebergdo: as on a machine where it is not installed
    def find_spec(self, name, path=None, target=None):
        if name == "icebergdo" or name.startswith("icebergdo."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoIcebergdo())
from pyiceberg.catalog.sql import SqlCatalog

props = json.loads(sys.argv[1])
table = SqlCatalog("icebergdo", **props).load_table("events.raw")
rows = table.scan(limit=1).to_arrow()
try:
    table.append(rows)
except ValueError as e:
    print("FAILED:", e)
    sys.exit(3)
print(json.dumps(sorted(t.file.file_path for t in table.scan().plan_files())))
"""


def test_plain_pyiceberg_writes_our_tables_and_legacy_tables_are_healed(lh: Lakehouse, tmp_path: Path) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    from icebergdo import layout

    lh.append_events([event(i) for i in range(3)])
    script = tmp_path / "foreign.py"
    script.write_text(FOREIGN_WRITER)
    props = json.dumps(lh.config.catalog_properties())

    def foreign() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), props], capture_output=True, text=True, timeout=120)

    # A table made before the LocationProvider left the table properties: a plain pyiceberg cannot write it.
    plain = SqlCatalog(lh.config.catalog_name, **lh.config.catalog_properties()).load_table("events.raw")
    with plain.transaction() as tx:
        tx.set_properties({layout.LEGACY_PROVIDER_KEY: layout.PROVIDER_IMPL})
    done = foreign()
    assert done.returncode == 3 and "Could not initialize LocationProvider" in done.stdout, done.stdout + done.stderr

    # icebergdo removes the property on first load; from then on the foreign writer succeeds.
    assert layout.LEGACY_PROVIDER_KEY not in lh.table("events.raw").properties
    done = foreign()
    assert done.returncode == 0, done.stdout + done.stderr
    files = json.loads(done.stdout.splitlines()[-1])
    foreign_files = [f for f in files if "/events/ts_hour=" in f]
    # What a foreign writer produces: `write.data.path` + pyiceberg's own partition folders and names.
    assert len(foreign_files) == 1 and foreign_files[0].startswith(f"{lh.config.warehouse}/events/ts_hour=2026-11-25-10/")
    assert len(scan_rows(lh, "events.raw", "id")) == 4
    # icebergdo's own appends keep the ADR layout.
    lh.append_events([event(9, hour=11)])
    newest = {t.file.file_path for t in lh.table("events.raw").scan().plan_files()} - set(files)
    assert len(newest) == 1 and layout.EVENT_FILE_RE.search(newest.pop())


# -- `icebergdo serve` mounts the catalog at /catalog ---------------------------------------------
def test_icebergdo_serve_serves_the_catalog(lh: Lakehouse, config: Config, tmp_path: Path) -> None:
    catalog_token, ingest_token = new_token(), new_token()
    path = tmp_path / "serve.toml"
    path.write_text(config_toml(config, f"""
[serve]
maintenance = false
max_age = 0.3
[[serve.tokens]]
name = "ingest"
sha256 = "{token_hash(ingest_token)}"
scopes = ["ingest"]
[[serve.tokens]]
name = "engines"
sha256 = "{token_hash(catalog_token)}"
scopes = ["catalog"]
[serve.catalog]
enabled = true
"""))
    (port,) = free_ports(1)
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "icebergdo", "--config", str(path), "serve", "--port", str(port), "--wal", str(tmp_path / "wal")],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        # Ingest over HTTP, read it back over the REST catalog of the same process.
        r = requests.post(f"{base}/v1/events", json=[event(i) for i in range(3)], headers={"Authorization": f"Bearer {ingest_token}"}, timeout=30)
        assert r.status_code in (200, 202), r.text
        storage = {k: v for k, v in config.s3.fileio_properties().items() if k.startswith("s3.")} if config.s3 else {}
        cat = RestCatalog("served", uri=f"{base}/catalog", token=catalog_token, **storage)
        deadline = time.monotonic() + 30
        while cat.load_table("events.raw").current_snapshot() is None if cat.table_exists("events.raw") else True:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert cat.load_table("events.raw").scan().to_arrow().num_rows == 3
        cat.create_namespace("served_ns")
        assert "served_ns" in [ns[0] for ns in lh.catalog.list_namespaces()]
        # The scopes stay apart: an ingest token is no catalog token.
        assert requests.get(f"{base}/catalog/v1/namespaces", headers={"Authorization": f"Bearer {ingest_token}"}, timeout=10).status_code == 401
        assert catalog_token not in log.read_text(errors="replace") and ingest_token not in log.read_text(errors="replace")
    finally:
        proc.terminate()
        proc.wait(60)
