"""Faults: the object store or the catalog goes away. Appends fail clearly, never half-commit, never duplicate."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import boto3
import pyarrow as pa
import pytest
from sqlalchemy.exc import OperationalError

from icebergdo import Lakehouse, commit
from icebergdo.config import Config
from icebergdo.dev import s3dev
from icebergdo.errors import StorageError
from icebergdo.iceberg.catalog import IcebergdoCatalog
from tests import servers

TABLE = "faults.items"
SCHEMA = pa.schema([pa.field("k", pa.int64()), pa.field("v", pa.string())])


def _batch(i: int, rows: int = 4) -> pa.Table:
    return pa.table({"k": [i] * rows, "v": [f"r{j}" for j in range(rows)]}, schema=SCHEMA)


def _assert_no_secret(text: str, config: Config) -> None:
    assert config.s3 is not None and config.s3.secret_access_key
    assert config.s3.secret_access_key not in text
    pw = config.catalog_uri.split("://", 1)[1].split("@", 1)[0].split(":", 1)[-1]
    assert pw not in text


def _parquet_keys(config: Config) -> set[str]:
    s3 = config.s3
    assert s3 is not None
    client = boto3.client(
        "s3", endpoint_url=s3.endpoint, region_name=s3.region,
        aws_access_key_id=s3.access_key_id, aws_secret_access_key=s3.secret_access_key,
    )
    bucket, prefix = config.warehouse.removeprefix("s3://").split("/", 1)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return {o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".parquet")}


@pytest.mark.slow
def test_s3_killed_during_appends_then_restart_and_retry(postgres: servers.Postgres, tmp_path: Path) -> None:
    """A private SeaweedFS is stopped mid-stream: that append raises, a restart plus retry succeeds."""
    folder = tmp_path / "s3"
    s3 = servers.start_seaweedfs(folder)
    try:
        bucket = s3.create_bucket("faults-kill")
        config = Config.from_dict(
            {"catalog": {"uri": postgres.create_database("faults_kill"), "warehouse": f"s3://{bucket}/lake"},
             "s3": s3.s3_settings()},
            source="faults",
        )
        lh = Lakehouse.open(config)
        lh.create_table(TABLE, SCHEMA, data_path="faults/items")
        acked = 0
        for i in range(3):
            lh.append(TABLE, _batch(i))
            acked += 1
        before = lh.table(TABLE).current_snapshot().snapshot_id
        port = s3.s3_port
        s3.stop()

        started = time.monotonic()
        with pytest.raises(StorageError) as err:
            lh.append(TABLE, _batch(99), snapshot_properties={commit.BATCH_ID: "01JFAULT00000000000000000A"})
        assert time.monotonic() - started < 60
        message = str(err.value)
        assert "faults.items" in message and "Could not connect" in message
        _assert_no_secret(message, config)

        s3 = s3dev.start(folder, s3_port=port)  # same data folder, port and keys
        assert lh.table(TABLE).current_snapshot().snapshot_id == before  # still the last good snapshot
        lh.append(TABLE, _batch(99), snapshot_properties={commit.BATCH_ID: "01JFAULT00000000000000000A"})
        acked += 1
        rows = lh.query("SELECT count(*) AS n, count(DISTINCT k) AS batches FROM faults.items").to_pylist()[0]
        assert rows == {"n": acked * 4, "batches": acked}
    finally:
        s3.stop()


def test_lost_commit_response_is_not_committed_twice(lh: Lakehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalog commits but the answer is lost (injected): the retry finds the batch id and stops."""
    lh.create_table(TABLE, SCHEMA, data_path="faults/items")
    lh.append(TABLE, _batch(0))
    real = IcebergdoCatalog.commit_table
    calls = []

    def commit_then_lose_answer(self, table, requirements, updates):  # type: ignore[no-untyped-def]
        response = real(self, table, requirements, updates)
        calls.append(response.metadata_location)
        if len(calls) == 1:
            raise OperationalError("UPDATE iceberg_tables", {}, ConnectionResetError("connection reset by peer"))
        return response

    monkeypatch.setattr(IcebergdoCatalog, "commit_table", commit_then_lose_answer)
    result = lh.append(TABLE, _batch(1))
    monkeypatch.undo()

    assert len(calls) == 1  # no second commit was attempted: the history showed the batch had landed
    table = lh.table(TABLE)
    assert result.snapshot_id == table.current_snapshot().snapshot_id
    assert len(table.metadata.snapshots) == 2
    assert lh.query("SELECT count(*) AS n FROM faults.items WHERE k = 1").to_pylist() == [{"n": 4}]


def test_catalog_down_during_commit_leaves_last_good_snapshot(lh: Lakehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit to the catalog fails (injected): StorageError, table unchanged, data files kept."""
    lh.create_table(TABLE, SCHEMA, data_path="faults/items")
    lh.append(TABLE, _batch(0))
    before = lh.table(TABLE).current_snapshot().snapshot_id
    files_before = _data_files(lh)

    def refuse(self, table, requirements, updates):  # type: ignore[no-untyped-def]
        raise OperationalError("UPDATE iceberg_tables", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(IcebergdoCatalog, "commit_table", refuse)
    monkeypatch.setattr(commit.RetryPolicy, "delay", lambda self, retry: 0.01)
    with pytest.raises(StorageError) as err:
        lh.append(TABLE, _batch(1))
    monkeypatch.undo()

    assert "outcome is unknown" in str(err.value)
    if lh.config.s3:
        _assert_no_secret(str(err.value), lh.config)
    table = lh.table(TABLE)
    assert table.current_snapshot().snapshot_id == before
    assert lh.query("SELECT count(*) AS n FROM faults.items").to_pylist() == [{"n": 4}]
    # The failed attempts' data files stay for orphan cleanup: deleting them is unsafe when an outcome is unknown.
    assert len(_data_files(lh)) > len(files_before)


def _data_files(lh: Lakehouse) -> set[str]:
    if lh.config.is_s3:
        return _parquet_keys(lh.config)
    root = Path(lh.config.warehouse.removeprefix("file://"))
    return {str(p) for p in root.rglob("*.parquet")}


def test_unreachable_catalog_is_a_storage_error_without_password(seaweedfs: servers.SeaweedFS, tmp_path: Path) -> None:
    (port,) = s3dev.free_ports(1)  # nothing listens there
    config = Config.from_dict(
        {"catalog": {"uri": f"postgresql+psycopg://icebergdo:s3cr3t-pw@127.0.0.1:{port}/nowhere",
                     "warehouse": "s3://nowhere/lake"},
         "s3": seaweedfs.s3_settings()},
    )
    with pytest.raises(StorageError) as err:
        Lakehouse.open(config)
    assert "s3cr3t-pw" not in str(err.value) and str(port) in str(err.value)


def test_stalled_s3_endpoint_fails_within_the_timeout(seaweedfs: servers.SeaweedFS, postgres: servers.Postgres) -> None:
    """An endpoint that accepts connections and never answers: the append fails, it does not hang."""
    bucket = seaweedfs.create_bucket("faults-stall")
    uri = postgres.create_database("faults_stall")
    good = Config.from_dict({"catalog": {"uri": uri, "warehouse": f"s3://{bucket}/lake"}, "s3": seaweedfs.s3_settings()})
    Lakehouse.open(good).create_table(TABLE, SCHEMA, data_path="faults/items")

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(silent.accept()[0]) for _ in iter(int, 1)], daemon=True).start()
    stalled_s3 = {**seaweedfs.s3_settings(), "endpoint": f"http://127.0.0.1:{silent.getsockname()[1]}",
                  "connect_timeout": 1, "request_timeout": 1}
    stalled = Config.from_dict({"catalog": {"uri": uri, "warehouse": f"s3://{bucket}/lake"}, "s3": stalled_s3})
    started = time.monotonic()
    try:
        with pytest.raises(StorageError):
            Lakehouse.open(stalled).append(TABLE, _batch(1))
    finally:
        silent.close()
    assert time.monotonic() - started < 45


def test_lost_commit_response_of_a_ledger_append_is_not_committed_twice(lh: Lakehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same fault for a durable writer's commit: the retry finds the batch in the ledger and stops."""
    from icebergdo import ledger

    wid = "01JFA01TWR1TER000000000001"
    lh.create_table(TABLE, SCHEMA, data_path="faults/items")
    real = IcebergdoCatalog.commit_table
    calls = []

    def commit_then_lose_answer(self, table, requirements, updates):  # type: ignore[no-untyped-def]
        response = real(self, table, requirements, updates)
        calls.append(response.metadata_location)
        if len(calls) == 1:
            raise OperationalError("UPDATE iceberg_tables", {}, ConnectionResetError("connection reset by peer"))
        return response

    monkeypatch.setattr(IcebergdoCatalog, "commit_table", commit_then_lose_answer)
    monkeypatch.setattr(commit.RetryPolicy, "delay", lambda self, retry: 0.01)
    result = lh.append(TABLE, _batch(1), writer_id=wid, writer_seq=1)
    monkeypatch.undo()

    assert len(calls) == 1 and result.already_committed  # the ledger showed the first attempt had landed
    table = lh.table(TABLE)
    assert ledger.committed_upto(table.metadata.properties, wid) == 1
    assert result.snapshot_id == table.current_snapshot().snapshot_id
    assert lh.query("SELECT count(*) AS n FROM faults.items").to_pylist() == [{"n": 4}]
