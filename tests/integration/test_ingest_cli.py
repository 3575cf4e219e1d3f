"""`icebergdo ingest`: JSON lines in, one clear error (line + field) and nothing committed for bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from icebergdo import BadInputError, Config, Lakehouse
from icebergdo.cli import main
from tests.integration import procs
from tests.integration.procs import cli_args


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def good(i: int) -> str:
    return json.dumps({"ts": 1772359200000 + i * 1000, "type": "webhook", "source": "shop", "payload": {"order": i}})


def snapshot_count(lh: Lakehouse) -> int:
    return len(lh.events_table().snapshots())


def test_ingest_file_commits_and_reports(lh: Lakehouse, config: Config, tmp_path: Path, capsys) -> None:
    lines = [
        json.dumps({"id": "evt-1", "ts": "2026-03-01T10:00:00+01:00", "type": "webhook", "source": "stripe",
                    "payload": {"amount": 12.5, "tags": ["a", "b"], "nested": {"ok": True}}}),
        json.dumps({"ts": 1772359200000, "type": "rpc", "payload": "plain text"}),
        "",  # blank lines are ignored
        json.dumps({"ts": "2026-03-01 12:30:00", "type": "ws", "namespace": "app", "collection": "users", "payload": None}),
    ]
    path = write_lines(tmp_path / "events.jsonl", lines)
    assert main([*cli_args(config, tmp_path), "ingest", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ingested 3 events into events.raw" in out and "1 commit(s)" in out
    con = lh.duckdb()
    rows = con.execute("SELECT id, ts, type, source, payload FROM events ORDER BY ts").fetchall()
    assert len(rows) == 3
    assert rows[0][0] == "evt-1" and rows[0][1].isoformat().startswith("2026-03-01 09:00:00".replace(" ", "T"))
    assert json.loads(rows[0][4]) == {"amount": 12.5, "tags": ["a", "b"], "nested": {"ok": True}}
    assert con.execute("SELECT count(DISTINCT id) FROM events").fetchone()[0] == 3
    # --json output; running the same command again commits nothing (the batch id derives from the input)
    assert main([*cli_args(config, tmp_path), "ingest", str(path), "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["events"] == 3 and result["commits"] == 0 and result["already_committed_batches"] == 1
    assert result["skipped_lines"] == 0
    assert lh.duckdb().execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone() == (3, 3)
    # ... also after every snapshot that knew the batch id is gone: the ledger remembers the ingest.
    lh.append_events([{"ts": "2026-03-02T00:00:00Z", "type": "custom"}])
    table = lh.events_table()
    older = [s.snapshot_id for s in table.snapshots() if s.snapshot_id != table.current_snapshot().snapshot_id]
    table.maintenance.expire_snapshots().by_ids(older).commit()
    assert len(lh.events_table().snapshots()) == 1
    assert main([*cli_args(config, tmp_path), "ingest", str(path), "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["commits"] == 0 and result["already_committed_batches"] == 1
    assert lh.duckdb().execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone() == (4, 4)


BAD_LINES = [
    ('{"type": "webhook"}', "line 2: missing required field 'ts'"),
    ('{"ts": "not a time", "type": "webhook"}', "line 2: field 'ts': cannot parse time"),
    ('[1, 2, 3]', "line 2: expected a JSON object, got list"),
    ('{"ts": 1772359200000, "type": "webhook", "payload": {"x": NaN}}', "line 2: field 'payload': not JSON-serialisable"),
    ('{"ts": 1772359200000, "type": "webhook", "colour": "red"}', "line 2: unknown field(s) 'colour'"),
    ('{"ts": 1772359200000, "type": ', "line 2: invalid JSON"),
    ('{"ts": 1772359200000, "source": "x"}', "line 2: field 'type': required"),
]


def test_bad_input_fails_clearly_and_commits_nothing(lh: Lakehouse, config: Config, tmp_path: Path, capsys) -> None:
    args = cli_args(config, tmp_path)
    for n, (bad, message) in enumerate(BAD_LINES):
        path = write_lines(tmp_path / f"bad{n}.jsonl", [good(0), bad, good(2)])
        assert main([*args, "ingest", str(path), "--no-progress"]) == 3, bad
        err = capsys.readouterr().err
        assert f"bad{n}.jsonl: {message}" in err, err
    assert snapshot_count(lh) == 0
    # A bad line 5000 commits nothing, even though it comes after several flushes' worth of events.
    path = write_lines(tmp_path / "big.jsonl", [good(i) for i in range(4999)] + ['{"ts": "soon", "type": "x"}'])
    assert main([*args, "ingest", str(path), "--max-rows", "1000", "--chunk-bytes", "20000", "--no-progress"]) == 3
    assert "big.jsonl: line 5000: field 'ts'" in capsys.readouterr().err
    assert snapshot_count(lh) == 0


def test_on_error_skip_and_unknown_fields(lh: Lakehouse, config: Config, tmp_path: Path, capsys) -> None:
    args = cli_args(config, tmp_path)
    lines = [good(0)] + [bad for bad, _ in BAD_LINES] + [good(99)]
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    assert main([*args, "ingest", str(path), "--on-error", "skip", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "ingested 2 events" in captured.out
    assert f"skipped {len(BAD_LINES)} bad line(s)" in captured.err
    assert "mixed.jsonl: line 3: field 'ts': cannot parse time" in captured.err
    only_bad = write_lines(tmp_path / "only-bad.jsonl", [bad for bad, _ in BAD_LINES])
    assert main([*args, "ingest", str(only_bad), "--on-error", "skip", "--no-progress"]) == 3  # nothing landed: a script must see it
    assert "every line was skipped" in capsys.readouterr().err
    extra = write_lines(tmp_path / "extra.jsonl", [json.dumps({"id": "x1", "ts": 1772359200, "type": "t", "region": "eu"})])
    assert main([*args, "ingest", str(extra), "--unknown", "payload", "--no-progress"]) == 0
    extra2 = write_lines(tmp_path / "extra2.jsonl", [json.dumps({"id": "x2", "ts": 1772359200, "type": "t", "region": "us"})])
    assert main([*args, "ingest", str(extra2), "--unknown", "keep", "--no-progress"]) == 0
    con = lh.duckdb()
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 4
    assert con.execute("SELECT payload::JSON->>'region' FROM events WHERE id = 'x1'").fetchone()[0] == "eu"
    assert con.execute("SELECT region FROM events WHERE id = 'x2'").fetchone()[0] == "us"
    # a new field that differs from a column only by case: refused, naming the line, before any change
    for n, (field, column) in enumerate((("ID", "id"), ("Region", "region")), 3):
        clash = write_lines(tmp_path / f"extra{n}.jsonl", [good(50), json.dumps({"id": f"x{n}", "ts": 1772359200, "type": "t", field: "?"})])
        assert main([*args, "ingest", str(clash), "--unknown", "keep", "--no-progress"]) == 3
        err = capsys.readouterr().err
        assert f"field {field!r} differs from the column {column!r} only by case" in err, err
        assert ("line 2" in err) == (field == "ID"), err  # a core column is known per line; a kept one at the table
    columns = [r[0] for r in con.execute("SELECT column_name FROM (DESCRIBE SELECT * FROM events)").fetchall()]
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 4
    assert "Region" not in columns and "ID" not in columns and "ID_1" not in columns


def test_stdin_in_a_subprocess(lh: Lakehouse, config: Config, tmp_path: Path, monkeypatch, capsys) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "icebergdo", *cli_args(config, tmp_path), "ingest", "-", "--no-progress"]
    data = "".join(good(i) + "\n" for i in range(250))
    proc = subprocess.run(cmd, input=data, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ingested 250 events" in proc.stdout
    # bad stdin, in-process this time: nothing of it is committed
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO((data + "{oops\n").encode()))))
    assert main([*cli_args(config, tmp_path), "ingest", "-", "--no-progress"]) == 3
    assert "stdin: line 251: invalid JSON" in capsys.readouterr().err
    assert lh.query("SELECT count(*) AS n FROM events").column("n").to_pylist() == [250]


@pytest.mark.parametrize("flag", ["--stream"])
def test_stream_mode_commits_as_it_goes(lh: Lakehouse, config: Config, tmp_path: Path, flag: str, capsys) -> None:
    """--stream commits valid chunks before a later bad line (documented trade-off for endless input)."""
    path = write_lines(tmp_path / "s.jsonl", [good(i) for i in range(300)] + ["[]"])
    rc = main([*cli_args(config, tmp_path), "ingest", str(path), flag, "--chunk-bytes", "4000", "--no-wal", "--no-progress"])
    assert rc == 3 and "line 301: expected a JSON object" in capsys.readouterr().err
    # every chunk before the bad line's chunk is committed: a prefix of the file, exactly once
    count, distinct, highest = lh.query("SELECT count(*), count(DISTINCT id), max(ts) FROM events").to_pylist()[0].values()
    assert 200 <= count < 300 and distinct == count
    assert int(highest.timestamp() * 1000) == 1772359200000 + (count - 1) * 1000


def id_less(i: int) -> str:
    """Realistic shape: no id, times up to 20 min late over several hours, a JSON payload of a few hundred bytes."""
    late = (i * 7919) % 1200
    return json.dumps({"ts": 1772359200 + i * 3 - late, "type": "webhook", "source": f"svc-{i % 7}",
                       "payload": {"order": i, "note": "x" * (150 + i % 100)}})


def test_killed_ingest_rerun_commits_each_line_exactly_once(lh: Lakehouse, config: Config, tmp_path: Path) -> None:
    """Issue 14 item 3: SIGKILL at random points, re-run the same command each time → count = distinct = lines."""
    import random
    import signal
    import time

    n = 24_000
    path = write_lines(tmp_path / "big.jsonl", [id_less(i) for i in range(n)])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "icebergdo", *cli_args(config, tmp_path), "ingest", str(path), "--no-progress",
           "--max-rows", "500", "--chunk-bytes", "100000", "--json"]  # 48 batches: kills land mid-run
    rng = random.Random(14)
    counts = []
    for _ in range(4):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # kill at a random point once a few more batches have committed
        target = len(Lakehouse.open(config).events_table().snapshots()) + rng.randint(1, 3)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if len(Lakehouse.open(config).events_table().snapshots()) >= target:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        counts.append(Lakehouse.open(config).query("SELECT count(*) AS n FROM events").column("n")[0].as_py()
                      if Lakehouse.open(config).events_table().current_snapshot() else 0)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["already_committed_batches"] >= 1 and result["events"] == n
    count, distinct = lh.duckdb().execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()
    assert count == distinct == n, (count, distinct, counts)
    assert any(0 < c < n for c in counts), counts  # at least one kill landed while batches were committing
    batch_ids = [s.summary.additional_properties["icebergdo.batch-id"] for s in lh.events_table().snapshots()
                 if "icebergdo.batch-id" in s.summary.additional_properties]  # not the upkeep's own snapshots
    assert len(batch_ids) == len(set(batch_ids)) >= 10  # batches of >= 500 lines, cut at 100 kB chunk boundaries


def test_compressed_stdin_and_explicit_batch_id(lh: Lakehouse, config: Config, tmp_path: Path, capsys) -> None:
    import gzip

    import zstandard

    lines = [id_less(i) for i in range(500)]
    text = "".join(line + "\n" for line in lines).encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(text[: len(text) // 2 + text[len(text) // 2:].index(b"\n") + 1]))
    (tmp_path / "b.zst").write_bytes(zstandard.ZstdCompressor().compress(text[len(text) // 2 + text[len(text) // 2:].index(b"\n") + 1:]))
    args = [*cli_args(config, tmp_path), "ingest", "--no-progress", "--json"]
    assert main([*args, str(tmp_path / "a.jsonl.gz"), str(tmp_path / "b.zst"), "--batch-id", "backfill-7"]) == 0
    assert json.loads(capsys.readouterr().out)["commits"] == 2
    ids = {s.summary.additional_properties.get("icebergdo.batch-id") for s in lh.events_table().snapshots()}
    assert ids == {"backfill-7", "backfill-7:1"}
    # the same content through gzip on stdin: recognised by content, nothing new
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-m", "icebergdo", *args, "-"], input=gzip.compress(text), capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first = json.loads(proc.stdout)
    assert first["events"] == 500 and first["commits"] == 1  # explicit batch ids differ from content-derived ones
    proc = subprocess.run([sys.executable, "-m", "icebergdo", *args, "-"], input=zstandard.ZstdCompressor().compress(text),
                          capture_output=True, env=env, timeout=120)
    assert json.loads(proc.stdout)["commits"] == 0  # same content again (zstd this time): already committed
    count, distinct = lh.duckdb().execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()
    assert count == 1000 and distinct == 1000


def test_cdc_apply_rerun_does_not_double_the_log(lh: Lakehouse, config: Config, tmp_path: Path, capsys) -> None:
    changes = [{"op": "insert", "id": f"o{i}", "ts": "2026-03-01T10:00:00Z", "status": "new"} for i in range(50)]
    changes += [{"op": "update", "id": "o1", "status": "paid"}, {"op": "delete", "id": "o2"}]  # no ts: arrival time
    path = write_lines(tmp_path / "orders.jsonl", [json.dumps(c) for c in changes])
    args = [*cli_args(config, tmp_path), "cdc", "apply", "shop", "orders", str(path), "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["changes"] == 52
    for _ in range(2):
        assert main(args) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["changes"] == 0 and out["already_logged"] == 52
    con = lh.duckdb()
    assert con.execute("SELECT count(*), count(DISTINCT _id) FROM shop.orders__deltas").fetchone() == (52, 52)
    assert con.execute("SELECT count(*) FROM shop.orders").fetchone()[0] == 49
    assert con.execute("SELECT status FROM shop.orders WHERE id = 'o1'").fetchone()[0] == "paid"
    # a grown file: only the new line is logged
    write_lines(path, [json.dumps(c) for c in changes] + [json.dumps({"op": "insert", "id": "o99", "ts": "2026-03-01T11:00:00Z"})])
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["changes"] == 53  # new content hash: a new input (ids differ)


def test_dedupe_drops_repeats_within_a_batch(lh: Lakehouse, config: Config, tmp_path: Path, capsys) -> None:
    lh.events_table()
    lh.set_dedupe("events.raw", "id", window="24h")
    assert lh.events_table().properties["icebergdo.dedupe"] == "id"
    events = [{"id": f"evt_{i % 40}", "ts": 1772359200 + i, "type": "webhook", "payload": {"delivery": i}} for i in range(100)]
    lh.append_events(events)
    con = lh.duckdb()
    assert con.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone() == (40, 40)
    # the first arrival is kept
    assert con.execute("SELECT payload::JSON->>'delivery' FROM events WHERE id = 'evt_3'").fetchone()[0] == "3"
    path = write_lines(tmp_path / "dups.jsonl", [json.dumps(e | {"id": "file_" + e["id"]}) for e in events])
    assert main([*cli_args(config, tmp_path), "ingest", str(path), "--no-progress"]) == 0
    with lh.writer() as w:
        w.extend([e | {"id": "w_" + e["id"]} for e in events])
    assert lh.duckdb().execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone() == (120, 120)
    lh.set_dedupe("events.raw", None)
    lh.append_events(events[:2])
    assert lh.duckdb().execute("SELECT count(*) FROM events").fetchone()[0] == 122
    with pytest.raises(BadInputError, match="no column 'nope'"):
        lh.set_dedupe("events.raw", "nope")


def test_stream_commits_while_stdin_stays_open(lh: Lakehouse, config: Config, tmp_path: Path) -> None:
    import time

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "icebergdo", *cli_args(config, tmp_path), "ingest", "-", "--stream", "--max-age", "0.3", "--no-progress"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    proc.stdin.write((good(0) + "\n").encode())
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not Lakehouse.open(config).events_table().current_snapshot():
        time.sleep(0.1)
    assert Lakehouse.open(config).query("SELECT count(*) AS n FROM events").column("n").to_pylist() == [1]  # the pipe is still open
    out, err = proc.communicate((good(1) + "\n").encode(), timeout=120)
    assert proc.returncode == 0, err
    assert lh.query("SELECT count(*) AS n FROM events").column("n").to_pylist() == [2]


def test_ingest_memory_is_bounded_by_the_batch_not_the_file(lh: Lakehouse, config: Config, tmp_path: Path) -> None:
    """Peak RSS of an ingest does not grow with the input: a file 4x larger peaks within 40 MB of the
    smaller one (small batches here, so the bound is tight); and ingest runs on jemalloc returning
    freed memory at once, where pyarrow has it (docs/writer.md: bounded memory)."""
    import pyarrow as pa

    pad = "x" * 300
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    for path, n in ((small, 30_000), (large, 120_000)):
        with path.open("w") as f:
            for i in range(n):
                f.write(json.dumps({"ts": 1772359200000 + (i * 7919) % 21_600_000, "type": "webhook", "payload": {"f": path.name, "i": i, "note": pad}}) + "\n")
    args = [*cli_args(config, tmp_path), "ingest", "--no-progress", "--max-bytes", "4MiB", "--chunk-bytes", "1MiB"]
    report = "{'pool': __import__('pyarrow').default_memory_pool().backend_name, 'rss': __import__('resource').getrusage(0).ru_maxrss}"
    rss = {}
    for path in (small, large):
        values = procs.cli_in_child([*args, str(path)], report)
        rss[path.name] = values["rss"] / 1024
        try:
            pa.jemalloc_memory_pool()
            assert values["pool"] == "jemalloc"
        except NotImplementedError:  # a pyarrow without jemalloc keeps its default pool
            assert values["pool"] == pa.default_memory_pool().backend_name
    assert rss["large.jsonl"] < rss["small.jsonl"] + 40, rss
    assert lh.duckdb().execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone() == (150_000, 150_000)
