"""Both backends end to end: a lakehouse is created, appended to, and read back by DuckDB."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import boto3
import pyarrow as pa
import pytest

from icebergdo import Lakehouse
from icebergdo.config import Config
from tests import servers

pytestmark = pytest.mark.rest_backend  # also on the `rest` backend (tests/conftest.py)


def test_append_and_read_back_with_duckdb(lh: Lakehouse, backend: str) -> None:
    events = [{"ts": datetime(2026, 1, 2, 3, i, tzinfo=UTC), "type": "webhook", "payload": {"n": i}} for i in range(5)]
    result = lh.append_events(events)
    assert result.rows == 5 and result.files >= 1
    lh.append_events(events[:2])
    got = lh.query("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events").to_pylist()[0]
    assert got == {"n": 7, "ids": 7}
    if backend == "s3pg":
        assert lh.config.warehouse.startswith("s3://")
        assert lh.config.catalog_uri.startswith("postgresql+psycopg://")


def test_s3pg_files_land_in_the_bucket(request: pytest.FixtureRequest, tmp_path) -> None:
    """The data really is in SeaweedFS under the ADR layout (listed with boto3, not pyiceberg)."""
    from tests.conftest import make_config

    config: Config = make_config(request, "s3pg", tmp_path)
    lh = Lakehouse.open(config)
    lh.create_table("app.items", pa.schema([("k", pa.int64()), ("v", pa.string())]), data_path="app/items")
    lh.append("app.items", pa.table({"k": [1, 2, 3], "v": ["a", "b", "c"]}))
    s3 = config.s3
    assert s3 is not None
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
    )
    bucket, prefix = config.warehouse.removeprefix("s3://").split("/", 1)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]]
    assert any(k.endswith(".parquet") and "/app/items/" in k for k in keys), keys
    assert any(k.endswith(".metadata.json") and "/catalog/app.items/metadata/" in k for k in keys), keys
    assert lh.query("SELECT sum(k) AS s FROM app.items").to_pylist() == [{"s": 6}]


def test_servers_bind_loopback_only(seaweedfs: servers.SeaweedFS, postgres: servers.Postgres) -> None:
    """Every listener of both servers is on 127.0.0.1 (from /proc/net/tcp, owned by their PIDs)."""
    for pid in (seaweedfs.pid, postgres.pid):
        addrs = _listening_addresses(pid)
        assert addrs, f"no listeners found for pid {pid}"
        assert all(a == "127.0.0.1" for a in addrs), addrs


def _listening_addresses(pid: int) -> set[str]:
    import os
    import socket
    import struct

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    addrs = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A = LISTEN
                continue
            hexaddr = cols[1].split(":")[0]
            if len(hexaddr) == 8:
                addrs.add(socket.inet_ntoa(struct.pack("<I", int(hexaddr, 16))))
            else:
                addrs.add(hexaddr)  # any IPv6 listener fails the assertion, as it should
    return addrs
