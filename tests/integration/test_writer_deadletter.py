"""A write-ahead-log batch that can never commit does not block the log: it is set aside at once (no
retries as if transient), later batches commit, the error names the cause and the commands, and
`icebergdo wal list|retry|drop` inspect it, commit it once the cause is fixed, or delete it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from icebergdo import Config, Lakehouse
from icebergdo.cli import main
from icebergdo.errors import RejectedBatchError
from icebergdo.schema import to_events
from icebergdo.wal import WriteAheadLog, rejected_batches
from tests.integration.procs import cli_args

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
BAD, GOOD = "01JBADBATCH000000000000001", "01JG00DBATCH00000000000001"


def event(i: int, prefix: str, **extra: object) -> dict:
    return {"id": f"{prefix}-{i}", "ts": (T0 + timedelta(seconds=i)).isoformat(), "type": "webhook", "payload": {"i": i}, **extra}


def left_by_keep_ingest(folder: Path) -> None:
    """What a killed `ingest --unknown keep` leaves: a batch with a column the table never got, then a good one."""
    log = WriteAheadLog(folder, table="events.raw")
    for seq, batch_id, data in ((1, BAD, to_events([event(i, "bad", country="NL") for i in range(7)], unknown="keep")),
                                (2, GOOD, to_events([event(i, "good") for i in range(5)]))):
        seg = log.open_segment(seq, batch_id, 0, data.schema)
        seg.write(data)
        seg.close()
    log.close()


def counts(lh: Lakehouse) -> dict:
    return lh.query("SELECT count(*) AS n, count(DISTINCT id) AS d FROM events").to_pylist()[0]


def test_unfit_batch_is_set_aside_and_the_log_moves_on(lh: Lakehouse, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "wal"
    lh.events_table()
    left_by_keep_ingest(folder)
    started = time.monotonic()
    w = lh.writer(wal_dir=folder, max_age=60)
    w.extend([event(i, "new") for i in range(10)])
    with pytest.raises(RejectedBatchError) as err:
        w.close()
    assert time.monotonic() - started < 30  # not retried as if the store were down
    message = str(err.value)
    assert BAD in message and "7 events" in message and "country" in message  # the cause, not an empty detail
    assert "icebergdo wal list" in message and f"icebergdo wal retry {BAD}" in message and "--unknown keep" in message
    st = w.stats()
    assert (st.rejected_batches, st.rejected_events, st.retries) == (1, 7, 0)
    assert counts(lh) == {"n": 15, "d": 15}  # the good batch behind it and the new events committed
    assert [r.batch_id for r in rejected_batches(folder)] == [BAD]
    assert not list(folder.glob("*.arrow"))

    with lh.writer(wal_dir=folder, max_age=60) as again:  # set aside for good: no new rejection
        again.append(event(99, "new"))
    assert again.stats().rejected_batches == 0

    args = cli_args(config, tmp_path)
    capsys.readouterr()
    assert main([*args, "wal", "list", "--wal", str(folder), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["state"], row["batch_id"], row["seq"], row["events"], row["table"]) == ("rejected", BAD, 1, 7, "events.raw")
    assert "country" in row["reason"] and row["in_use"] is False
    assert main([*args, "wal", "list", "--wal", str(folder)]) == 0
    out = capsys.readouterr().out
    assert BAD in out and "rejected" in out and "icebergdo wal retry BATCH" in out
    assert main([*args, "wal", "retry", BAD, "--wal", str(folder)]) == 3  # still does not fit: set aside again
    assert [r.batch_id for r in rejected_batches(folder)] == [BAD]
    assert main([*args, "wal", "retry", BAD, "--wal", str(folder), "--unknown", "keep"]) == 0
    assert "1 batch(es) committed" in capsys.readouterr().out
    assert rejected_batches(folder) == []
    assert counts(lh) == {"n": 23, "d": 23}
    assert lh.query("SELECT count(*) AS n FROM events WHERE country = 'NL'").to_pylist() == [{"n": 7}]


def test_wal_drop_deletes_a_rejected_batch(lh: Lakehouse, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "wal"
    lh.events_table()
    left_by_keep_ingest(folder)
    with pytest.raises(RejectedBatchError), lh.writer(wal_dir=folder, max_age=60):
        pass
    args = cli_args(config, tmp_path)
    assert main([*args, "wal", "drop", "--wal", str(folder)]) == 1  # says which batch, or --all
    assert main([*args, "wal", "drop", "01JN0SUCHBATCH000000000001", "--wal", str(folder)]) == 7
    assert main([*args, "wal", "drop", BAD, "--wal", str(folder)]) == 0
    assert rejected_batches(folder) == [] and counts(lh) == {"n": 5, "d": 5}
    capsys.readouterr()
    assert main([*args, "wal", "list", "--wal", str(folder), "--json"]) == 0
    assert [r["state"] for r in json.loads(capsys.readouterr().out)] == ["empty"]


def test_a_non_durable_writer_reports_what_it_had_to_drop(lh: Lakehouse) -> None:
    schema = pa.schema([pa.field("k", pa.string()), pa.field("v", pa.int64())])
    lh.create_table("app.metrics", schema, data_path="app/metrics")
    w = lh.writer("app.metrics", max_age=60, upkeep=False)
    w.extend([{"k": "a", "v": 1}, {"k": "b", "v": 2}])
    lh.catalog.drop_table("app.metrics")  # gone before the flush: it can never commit
    with pytest.raises(RejectedBatchError, match="2 events.*dropped.*not durable"):
        w.flush()
    w.append({"k": "c", "v": 3})
    with pytest.raises(RejectedBatchError):
        w.close()
    assert w.stats().rejected_batches == 2
