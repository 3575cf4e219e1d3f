"""The ADR layout on real backends: file names when a writer and compaction share a process, and
names or paths that must never reach storage (data paths outside the warehouse, reserved namespaces)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from icebergdo import Lakehouse, layout
from icebergdo.errors import BadNameError
from icebergdo.store import Store, normalise

T0 = datetime(2026, 11, 25, 10, tzinfo=UTC)


def events(start: datetime, n: int, tag: str) -> list[dict[str, Any]]:
    return [{"ts": (start + timedelta(seconds=7 * i)).isoformat(), "type": "webhook", "source": tag, "payload": {"i": i}} for i in range(n)]


def test_writer_flushing_during_compaction_in_the_same_process_writes_plain_ulid_names(
    lh: Lakehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compaction runs in a thread; the writer flushes in this one while compaction is mid-write.

    To make the interleaving certain rather than likely, compaction's first output file waits (in
    the LocationProvider, after its file prefix is in effect) until the writer has flushed once.
    Then every writer file must have a plain ULID name and only compaction's outputs `_compact-`.
    """
    for k in range(6):  # six small files in hour 10: enough input for compaction (min 5)
        lh.append_events(events(T0 + timedelta(minutes=k), 20, f"seed{k}"))

    compacting, flushed = threading.Event(), threading.Event()
    real = layout.AdrLocationProvider.new_data_location

    def pausing(self: layout.AdrLocationProvider, data_file_name: str, partition_key: Any = None) -> str:
        if self.file_prefix and not compacting.is_set():
            compacting.set()
            flushed.wait(120)
        return real(self, data_file_name, partition_key)

    monkeypatch.setattr(layout.AdrLocationProvider, "new_data_location", pausing)
    outcome: dict[str, Any] = {}

    def run_compaction() -> None:
        try:
            outcome["reports"] = lh.maintain(["events.raw"], ["compact"])
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            outcome["error"] = e

    thread = threading.Thread(target=run_compaction, name="compaction")
    written = 0
    with lh.writer(wal_dir=tmp_path / "wal", max_rows=10_000, max_age=60) as w:
        thread.start()
        deadline = time.monotonic() + 120
        while not compacting.wait(0.1) and thread.is_alive() and time.monotonic() < deadline:
            pass
        assert compacting.is_set(), outcome.get("error") or "compaction never wrote an output"
        w.extend(events(T0 + timedelta(hours=1), 50, "during"))  # hour 11: files the writer writes right now
        w.flush()
        written += 50
        flushed.set()
        for r in range(3):  # and more while compaction finishes and commits
            w.extend(events(T0 + timedelta(hours=1, minutes=10 + r), 30, f"after{r}"))
            w.flush()
            written += 30
        thread.join(120)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    (report,) = outcome["reports"]
    assert report.files_in == 6 and report.files_out >= 1, report

    table = lh.table("events.raw")
    compactions = {s.snapshot_id for s in table.snapshots() if s.summary and s.summary.get("icebergdo.maintenance") == "compact"}
    assert len(compactions) == 1
    entries = table.inspect.entries().select(["status", "snapshot_id", "data_file"]).to_pylist()
    live = {(e["snapshot_id"], e["data_file"]["file_path"]) for e in entries if e["status"] != 2}
    outputs = {path for snap, path in live if snap in compactions}
    by_others = {path for snap, path in live if snap not in compactions}
    assert len(outputs) == report.files_out
    assert all("/_compact-" in p for p in outputs), outputs
    assert by_others and all(layout.EVENT_FILE_RE.search(p) for p in by_others), by_others
    # Every data file in storage (also the replaced inputs, until expiry) is a plain ULID or one of compaction's outputs.
    stored = [f.path for f in Store(lh.config).list(f"{lh.config.warehouse}/events")]
    assert {p for p in stored if "/_compact-" in p} == {normalise(p) for p in outputs}
    assert all(layout.EVENT_FILE_RE.search(p) or "/_compact-" in p for p in stored), stored
    got = lh.query("SELECT count(*) AS n, count(DISTINCT id) AS d FROM events").to_pylist()
    assert got == [{"n": 120 + written, "d": 120 + written}]


def test_create_table_never_writes_outside_the_warehouse(lh: Lakehouse) -> None:
    schema = pa.schema([pa.field("x", pa.int64())])
    before = lh.tables()
    for data_path in ("../../x", "../x", "a/../../x", "/..", "Events/x"):
        with pytest.raises(BadNameError):
            lh.create_table("shop.escape", schema, data_path=data_path)
    assert lh.tables() == before  # refused before anything reached the catalog
    table = lh.create_table("shop.inside", schema, data_path="shop/inside")
    table.append(pa.table({"x": [1, 2]}, schema=schema))
    (path,) = [t.file.file_path for t in lh.table("shop.inside").scan().plan_files()]
    assert path.startswith(f"{lh.config.warehouse}/shop/inside/")


@pytest.mark.parametrize("namespace", ["Events", "catalog", "CATALOG"])
def test_reserved_namespaces_are_refused_in_any_case(lh: Lakehouse, namespace: str) -> None:
    with pytest.raises(BadNameError, match="reserved"):
        lh.collection(namespace, "orders", key="id")
    with pytest.raises(BadNameError, match="reserved"):
        lh.create_table(f"{namespace}.x", pa.schema([pa.field("x", pa.int64())]), data_path="shop/x")
    assert not [t for t in lh.tables() if t.split(".")[0].lower() == namespace.lower()]
