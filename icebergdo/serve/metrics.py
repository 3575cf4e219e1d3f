"""`/metrics` in the Prometheus text format, through `prometheus-client`, one registry per app.

Counters are updated by the routes; writer figures (committed, pending, WAL bytes, commits,
retries) are read from `Writer.stats()` and the WAL folder when scraped. Labels are route names,
status codes, refusal reasons and webhook source names from the config: never a token, a secret,
a header value or anything a client chose.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from icebergdo import layout
from icebergdo.serve.health import Status
from icebergdo.tables import AppendResult
from icebergdo.writer import WriterStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMMIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class _WriterCollector(Collector):
    def __init__(self, stats: Callable[[], WriterStats | None], wal_dir: Path, status: Callable[[], Status], groups: Callable[[], int]) -> None:
        self.stats, self.wal_dir, self.status, self.groups = stats, wal_dir, status, groups

    def collect(self) -> Iterator[Metric]:
        st = self.stats()
        ready = GaugeMetricFamily("icebergdo_serve_ready", "1 when the service takes events (see /readyz)")
        ready.add_metric([], 1.0 if self.status().ready else 0.0)
        yield ready
        if st is None:
            return
        for name, value, text in (
            ("icebergdo_serve_events_committed", st.flushed, "events committed to events.raw by this process"),
            ("icebergdo_serve_commits", st.commits, "Iceberg commits made by this process's writer"),
            ("icebergdo_serve_commit_retries", st.retries, "failed commit attempts (retried with backoff)"),
            ("icebergdo_serve_wal_syncs", st.wal_syncs, "fsyncs of the write-ahead log"),
            ("icebergdo_serve_replayed_batches", st.replayed_batches, "batches replayed from the WAL at start"),
            ("icebergdo_serve_write_groups", self.groups(), "groups of requests validated and made durable together (one extend each)"),
        ):
            c = CounterMetricFamily(name, text)
            c.add_metric([], float(value))
            yield c
        rejected = getattr(st, "rejected_events", None)  # dead-lettered batches, where the writer has them
        if rejected is not None:
            c = CounterMetricFamily("icebergdo_serve_dead_letter_events", "acknowledged events the writer set aside as unfit to commit")
            c.add_metric([], float(rejected))
            yield c
        pending = GaugeMetricFamily("icebergdo_serve_events_pending", "events acknowledged (durable in the WAL) but not yet committed")
        pending.add_metric([], float(st.pending))
        yield pending
        wal = GaugeMetricFamily("icebergdo_serve_wal_bytes", "bytes of write-ahead log segments on disk")
        wal.add_metric([], float(_folder_bytes(self.wal_dir)))
        yield wal
        if st.last_commit_seconds is not None:
            last = GaugeMetricFamily("icebergdo_serve_last_commit_seconds", "duration of the writer's last commit")
            last.add_metric([], st.last_commit_seconds)
            yield last


def _folder_bytes(folder: Path) -> int:
    """Bytes of WAL segments under `folder` (any depth: a writer may keep per-writer subfolders)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.endswith(".arrow"):
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except FileNotFoundError:
                    pass  # committed and deleted meanwhile
    return total


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter("icebergdo_serve_events_accepted", "events acknowledged (durable in the WAL)", ["route"], registry=r)
        self.requests = Counter("icebergdo_serve_requests", "requests answered, by route and status", ["route", "status"], registry=r)
        self.rejected = Counter("icebergdo_serve_rejected", "requests refused, by reason", ["reason"], registry=r)
        self.signature_failures = Counter("icebergdo_serve_webhook_signature_failures", "webhook deliveries that failed verification",
                                          ["source", "reason"], registry=r)
        self.ack_seconds = Histogram("icebergdo_serve_ack_seconds", "request received to durable acknowledgement", ["route"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.commit_lag = Histogram("icebergdo_serve_commit_latency_seconds",
                                    "acknowledgement to Iceberg commit, per committed batch (its oldest event)",
                                    buckets=COMMIT_BUCKETS, registry=r)
        self.idempotent_replays = Counter("icebergdo_serve_idempotent_replays", "requests answered from the idempotency memory",
                                          registry=r)

    def watch_writer(self, stats: Callable[[], WriterStats | None], wal_dir: Path, status: Callable[[], Status],
                     groups: Callable[[], int]) -> None:
        self.registry.register(_WriterCollector(stats, wal_dir, status, groups))

    def on_commit(self, table: object, batch: pa.Table, result: AppendResult) -> None:
        """Post-commit hook (`Tables.on_commit`): how long the batch's oldest event waited to be committed."""
        if result.table != layout.EVENTS_TABLE or result.already_committed or "ingested_at" not in batch.column_names:
            return
        oldest = pc.min(batch.column("ingested_at")).as_py()
        if oldest is not None:
            self.commit_lag.observe(max(0.0, time.time() - oldest.timestamp()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
