"""icebergdo's fallback S3 FileIO (Java) against SeaweedFS: multipart, retries on 503, bulk deletes.

A small fault proxy on 127.0.0.1 stands between the FileIO and SeaweedFS: it forwards every
request unchanged (the Host header too, so SigV4 signatures stay valid), answers the first N
with `503 SlowDown` when told to, and records what it saw. Files are read back with boto3.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from ulid import ULID

from icebergdo import Lakehouse
from icebergdo.engines import spark as isp
from tests import servers
from tests.conftest import make_config

pytestmark = pytest.mark.slow
SLOW_DOWN = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
FAST_RETRIES = {"s3.retry.min-wait-ms": "10", "s3.retry.max-wait-ms": "100"}


class FaultProxy:
    """Forwards to `upstream`; the first `faults` requests (after `fail_next`) get a 503 instead."""

    def __init__(self, upstream: str) -> None:
        target = urlparse(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.lock = threading.Lock()
        self.faults = 0
        self.served_503 = 0
        self.seen: list[tuple[str, str, int]] = []  # (method, path?query, status)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    fault = proxy.faults > 0
                    if fault:
                        proxy.faults -= 1
                        proxy.served_503 += 1
                if fault:
                    proxy.record(self.command, self.path, 503)  # before answering: the client moves on at once
                    self._answer(503, {"Content-Type": "application/xml", "Retry-After": "0"}, SLOW_DOWN)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                    conn.request(self.command, self.path, body=body if body else None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out = {k: v for k, v in resp.getheaders() if k.lower() not in ("connection", "transfer-encoding", "content-length")}
                    length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                    proxy.record(self.command, self.path, resp.status)
                    self._answer(resp.status, {**out, "Content-Length": length or "0"}, b"" if self.command == "HEAD" else data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client closed a stream it had read enough of (a seek)
                finally:
                    conn.close()

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                headers.setdefault("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if body:
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def record(self, method: str, path: str, status: int) -> None:
        with self.lock:
            self.seen.append((method, path, status))

    def fail_next(self, n: int) -> None:
        with self.lock:
            self.faults = n
            self.served_503 = 0
            self.seen.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(seaweedfs: servers.SeaweedFS) -> Iterator[FaultProxy]:
    p = FaultProxy(seaweedfs.endpoint)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def bucket(seaweedfs: servers.SeaweedFS) -> str:
    return seaweedfs.create_bucket("icebergdo-fileio")


def _fileio(seaweedfs: servers.SeaweedFS, endpoint: str, **extra: str) -> Any:
    """icebergdo.IcebergdoS3FileIO in the test process's JVM, pointed at `endpoint`."""
    s3 = seaweedfs.s3_settings()
    props = {
        "s3.endpoint": endpoint,
        "s3.region": s3["region"],
        "s3.access-key-id": s3["access_key_id"],
        "s3.secret-access-key": s3["secret_access_key"],
        **FAST_RETRIES,
        **extra,
    }
    io = isp.base_session()._jvm.icebergdo.IcebergdoS3FileIO()
    io.initialize(props)
    return io


def _write(io: Any, location: str, data: bytes, chunk: int = 1 << 20) -> None:
    out = io.newOutputFile(location).createOrOverwrite()
    for i in range(0, len(data), chunk):
        out.write(bytearray(data[i : i + chunk]), 0, len(data[i : i + chunk]))
    assert out.getPos() == len(data)
    out.close()


def test_multipart_upload_round_trips(seaweedfs: servers.SeaweedFS, proxy: FaultProxy, bucket: str) -> None:
    """Past `s3.multipart.threshold` × `s3.multipart.size` a file goes up in parts; below it, in one PUT."""
    part = 5 << 20  # S3's smallest part
    io = _fileio(seaweedfs, proxy.url, **{"s3.multipart.size": str(part), "s3.multipart.threshold": "1.0"})
    data = os.urandom(2 * part + (1 << 20) + 17)  # 3 parts: 5 MiB, 5 MiB, 1 MiB + 17 bytes
    big = f"s3://{bucket}/multipart/{ULID()}.bin"
    proxy.fail_next(0)
    _write(io, big, data)
    methods = [(m, p.split("?", 1)[1] if "?" in p else "") for m, p, _s in proxy.seen]
    assert sum(1 for m, q in methods if m == "POST" and q.startswith("uploads")) == 1
    assert sorted(q.split("&")[0] for m, q in methods if m == "PUT" and "partNumber=" in q) == ["partNumber=1", "partNumber=2", "partNumber=3"]
    assert sum(1 for m, q in methods if m == "POST" and q.startswith("uploadId=")) == 1  # CompleteMultipartUpload
    assert not any(m == "PUT" and q == "" for m, q in methods)  # no single PUT
    got = seaweedfs.client().get_object(Bucket=bucket, Key=big.split("/", 3)[3])["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    # The FileIO reads it back too, from any position.
    stream = io.newInputFile(big).newStream()
    stream.seek(part - 3)
    assert bytes(stream.readNBytes(10)) == data[part - 3 : part + 7]
    stream.close()
    assert io.newInputFile(big).getLength() == len(data)

    small = f"s3://{bucket}/multipart/{ULID()}.bin"
    proxy.fail_next(0)
    _write(io, small, data[: part - 1])
    assert [(m, "?" in p) for m, p, _s in proxy.seen] == [("PUT", False)]  # one PUT, no upload id
    assert seaweedfs.client().head_object(Bucket=bucket, Key=small.split("/", 3)[3])["ContentLength"] == part - 1


def test_503s_are_retried_with_backoff(seaweedfs: servers.SeaweedFS, proxy: FaultProxy, bucket: str) -> None:
    io = _fileio(seaweedfs, proxy.url, **{"s3.retry.num-retries": "4"})
    data = os.urandom(200_000)
    location = f"s3://{bucket}/retry/{ULID()}.bin"
    proxy.fail_next(3)  # the PUT fails three times, the fourth attempt lands
    _write(io, location, data)
    assert proxy.served_503 == 3 and [s for _m, _p, s in proxy.seen] == [503, 503, 503, 200]
    assert seaweedfs.client().get_object(Bucket=bucket, Key=location.split("/", 3)[3])["Body"].read() == data
    proxy.fail_next(2)  # a HEAD and a GET that meet 503s
    assert io.newInputFile(location).getLength() == len(data)
    stream = io.newInputFile(location).newStream()
    assert bytes(stream.readAllBytes()) == data
    stream.close()
    assert proxy.served_503 == 2
    proxy.fail_next(4)  # a listing
    listed = list(io.listPrefix(f"s3://{bucket}/retry/"))
    assert [f.location() for f in listed] == [location] and proxy.served_503 == 4

    # More 503s than retries: the write fails, says why, and leaves nothing behind.
    impatient = _fileio(seaweedfs, proxy.url, **{"s3.retry.num-retries": "2"})
    failing = f"s3://{bucket}/retry/{ULID()}.bin"
    proxy.fail_next(10)
    with pytest.raises(Exception, match=r"HTTP 503 SlowDown \(after 3 attempts\)"):
        _write(impatient, failing, data)
    proxy.fail_next(0)
    assert not io.newInputFile(failing).exists()


def test_bulk_delete_batches_delete_objects(seaweedfs: servers.SeaweedFS, proxy: FaultProxy, bucket: str) -> None:
    """deleteFiles sends DeleteObjects of `s3.delete.batch-size` keys; keys needing XML escapes round-trip."""
    io = _fileio(seaweedfs, proxy.url, **{"s3.delete.batch-size": "10"})
    client = seaweedfs.client()
    prefix = f"bulk-{ULID()}"
    keys = [f"{prefix}/{i:02d} a&b ü.bin" for i in range(25)]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    listed = sorted(f.location() for f in io.listPrefix(f"s3://{bucket}/{prefix}/"))
    assert listed == sorted(f"s3://{bucket}/{k}" for k in keys)  # XML-escaped keys parsed back
    proxy.fail_next(1)  # the first batch meets a 503 and is retried
    io.deleteFiles([f"s3://{bucket}/{k}" for k in keys] + [f"s3://{bucket}/{prefix}/never-existed"])
    posts = [(p, s) for m, p, s in proxy.seen if m == "POST"]
    assert [s for _p, s in posts] == [503, 200, 200, 200] and all(p.endswith("?delete=") for p, _s in posts)
    assert not any(m == "DELETE" for m, _p, _s in proxy.seen)  # never one request per key
    assert client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("KeyCount", 0) == 0
    for i in range(12):
        client.put_object(Bucket=bucket, Key=f"{prefix}/again/{i}", Body=b"y")
    proxy.fail_next(0)
    io.deletePrefix(f"s3://{bucket}/{prefix}/again/")
    assert client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("KeyCount", 0) == 0
    assert sum(1 for m, _p, _s in proxy.seen if m == "POST") == 2


def test_spark_writes_and_reads_through_injected_503s(request: pytest.FixtureRequest, tmp_path: Path, proxy: FaultProxy) -> None:
    """A Spark INSERT and SELECT on S3 succeed while the store answers 503 to the first requests."""
    direct = make_config(request, "s3pg", tmp_path)
    lh = Lakehouse.open(direct)
    lh.append_events([{"ts": f"2024-03-01T10:0{i}:00Z", "type": "webhook", "payload": {"i": i}} for i in range(3)])
    assert direct.s3 is not None
    # Spark reaches the store through the proxy; [spark.catalog] makes its retries quick.
    via_proxy = replace(direct, s3=replace(direct.s3, endpoint=proxy.url), sections={"spark": {"catalog": FAST_RETRIES}})
    spark = isp.session(via_proxy)
    proxy.fail_next(3)
    spark.sql("INSERT INTO events.raw VALUES ('01SPARK503000000000000000A', TIMESTAMP '2024-03-01 11:00:00', 'custom', 'spark', NULL, NULL, '{}', TIMESTAMP '2024-03-01 11:00:00')")
    assert proxy.served_503 == 3 and any(m == "PUT" and s == 200 for m, _p, s in proxy.seen)
    proxy.fail_next(3)
    assert spark.sql("SELECT count(*) FROM events.raw").collect()[0][0] == 4
    assert proxy.served_503 == 3
    assert lh.query("SELECT count(*) AS n FROM events WHERE source = 'spark'").to_pylist()[0]["n"] == 1  # DuckDB, straight to the store

