"""Foundation: the ADR layout, DuckDB as an independent reader, partition pruning, all-or-nothing batches."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

from icebergdo import BadInputError, BadNameError, Lakehouse
from icebergdo.iceberg.catalog import version_hint_location
from icebergdo.layout import EVENT_FILE_RE

DAY = datetime(2026, 3, 14, tzinfo=UTC)


def sample_events(n: int = 300, hours: int = 6) -> list[dict]:
    return [
        {
            "ts": (DAY + timedelta(seconds=i * hours * 3600 // n)).isoformat(),
            "type": ["webhook", "rpc", "ws", "custom", "collection.update"][i % 5],
            "source": f"src{i % 3}",
            "payload": {"i": i, "nested": {"x": [1, 2, i]}, "text": "héllo \"quoted\""},
        }
        for i in range(n)
    ]


def data_files(lh: Lakehouse) -> list[str]:
    return [t.file.file_path for t in lh.table("events.raw").scan().plan_files()]


def test_files_follow_adr_layout_and_hold_only_their_hour(lh: Lakehouse) -> None:
    lh.append_events(sample_events(300, hours=6))
    lh.append_events(sample_events(50, hours=2))
    files = data_files(lh)
    assert len(files) >= 6
    con = lh.duckdb()
    for path in files:
        m = EVENT_FILE_RE.search(path)
        assert m, path
        assert path.startswith(lh.config.warehouse + "/events/")
        year, month, day, hour = map(int, path.split("/events/")[1].split("/")[:4])
        lo, hi = con.execute("SELECT min(ts), max(ts) FROM read_parquet(?)", [path]).fetchone()
        start = datetime(year, month, day, hour, tzinfo=UTC)
        assert start <= lo and hi < start + timedelta(hours=1), (path, lo, hi)
    table = lh.table("events.raw")
    assert table.metadata_location.startswith(lh.config.warehouse + "/catalog/events.raw/metadata/")
    manifest_list = table.current_snapshot().manifest_list
    assert manifest_list.startswith(lh.config.warehouse + "/catalog/events.raw/manifests/")
    assert all(m.manifest_path.startswith(lh.config.warehouse + "/catalog/events.raw/manifests/") for m in table.current_snapshot().manifests(table.io))


def test_duckdb_reads_back_exactly_what_was_ingested(lh: Lakehouse) -> None:
    events = sample_events(500, hours=5)
    events[0]["id"] = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    lh.append_events(events)
    table = lh.table("events.raw")
    con = lh.duckdb()
    expected_hours: dict[int, int] = {}
    for e in events:
        h = datetime.fromisoformat(e["ts"]).hour
        expected_hours[h] = expected_hours.get(h, 0) + 1
    folder = table.location()
    for source in (f"iceberg_scan('{table.metadata_location}')", f"iceberg_scan('{folder}')", "events"):
        count, distinct = con.execute(f"SELECT count(*), count(DISTINCT id) FROM {source}").fetchone()
        assert (count, distinct) == (500, 500), source
        per_hour = dict(con.execute(f"SELECT hour(ts AT TIME ZONE 'UTC'), count(*) FROM {source} GROUP BY 1").fetchall())
        assert per_hour == expected_hours, source
    payloads = con.execute("SELECT payload FROM events WHERE id = '01HZZZZZZZZZZZZZZZZZZZZZZZ'").fetchone()
    assert json.loads(payloads[0]) == events[0]["payload"]
    got = {r[0]: json.loads(r[1]) for r in con.execute("SELECT CAST(ts AS VARCHAR) || type, payload FROM events").fetchall()}
    assert len(got) == 500
    assert sorted(p["i"] for p in got.values()) == list(range(500))


def test_version_hint_points_at_current_metadata(lh: Lakehouse) -> None:
    lh.append_events(sample_events(10))
    lh.append_events(sample_events(10, hours=1))
    table = lh.table("events.raw")
    path, text = version_hint_location(table.metadata_location)
    with table.io.new_input(path).open() as f:
        assert f.read().decode() == text
    assert table.metadata_location.endswith(f"/{text}.metadata.json")
    assert re.match(r"^\d{5}-[0-9a-f-]{36}$", text)
    con = lh.duckdb()
    assert con.execute(f"SELECT count(*) FROM iceberg_scan('{table.location()}')").fetchone()[0] == 20


def test_hour_range_query_reads_only_that_hour(lh: Lakehouse) -> None:
    lh.append_events(sample_events(600, hours=6))
    start = DAY + timedelta(hours=2)
    table = lh.table("events.raw")
    planned = list(table.scan(row_filter=And(GreaterThanOrEqual("ts", start.isoformat()), LessThan("ts", (start + timedelta(hours=1)).isoformat()))).plan_files())
    assert len(planned) == 1 and "/events/2026/03/14/02/" in planned[0].file.file_path
    con = lh.duckdb()
    plan = "\n".join(
        row[1]
        for row in con.execute(
            "EXPLAIN ANALYZE SELECT count(*) FROM events WHERE ts >= ? AND ts < ?", [start, start + timedelta(hours=1)]
        ).fetchall()
    )
    assert re.search(r"Total Files Read: 1\b", plan), plan
    assert con.execute("SELECT count(*) FROM events WHERE ts >= ? AND ts < ?", [start, start + timedelta(hours=1)]).fetchone()[0] == 100


def test_arrow_input_is_accepted(lh: Lakehouse) -> None:
    t = pa.table({"ts": pa.array([DAY, DAY + timedelta(minutes=1)], pa.timestamp("us", tz="UTC")), "type": ["rpc", "ws"], "payload": ['{"a":1}', None]})
    r = lh.append_events(t)
    assert r.rows == 2 and r.files == 1
    rows = lh.duckdb().execute("SELECT type, payload, length(id) FROM events ORDER BY ts").fetchall()
    assert rows == [("rpc", '{"a":1}', 26), ("ws", None, 26)]


def test_explicit_ts_unit_and_window(lh: Lakehouse) -> None:
    from icebergdo.times import INGEST_RULE

    seconds = int(DAY.timestamp())
    lh.append_events([{"ts": seconds * 1000, "type": "a"}], ts_unit="ms")
    with pytest.raises(BadInputError, match="event #1: field 'ts': 1970-01-21T.* is outside the plausible window"):
        lh.append_events([{"ts": seconds, "type": "a"}], time_rule=INGEST_RULE.__class__(unit="ms", earliest=INGEST_RULE.earliest))
    assert lh.duckdb().execute("SELECT count(*) FROM events").fetchone()[0] == 1


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"type": "rpc"}, "event #2: missing required field 'ts'"),
        ({"ts": "yesterday-ish", "type": "rpc"}, "event #2: field 'ts': cannot parse time"),
        (["not", "an", "object"], "event #2: expected a JSON object"),
        ({"ts": "2026-03-14T00:00:00Z", "type": "rpc", "payload": {"x": object()}}, "event #2: field 'payload': not JSON-serialisable"),
        ({"ts": "2026-03-14T00:00:00Z", "type": "rpc", "colour": "red"}, "event #2: unknown field(s) 'colour'"),
        ({"ts": "2026-03-14T00:00:00Z", "type": "rpc", "payload": float("nan")}, "event #2: field 'payload'"),
        ({"ts": "2026-03-14T00:00:00Z"}, "event #2: field 'type': required"),
        ({"ts": "1969-12-31T23:59:59Z", "type": "rpc"}, "event #2: field 'ts': 1969-12-31T23:59:59Z is before 1970-01-01"),
        ({"ts": "2026-03-14T00:00:00Z", "type": "rpc", "source": "\ud800"}, "event #2: field 'source': not valid Unicode text"),
        ({"ts": "2026-03-14T00:00:00Z", "type": "rpc", "payload": json.loads("[" * 700 + "]" * 700)}, "event #2: field 'payload': nested deeper"),
    ],
)
def test_bad_input_commits_nothing(lh: Lakehouse, bad: object, message: str) -> None:
    lh.append_events(sample_events(3))
    before = lh.table("events.raw").current_snapshot().snapshot_id
    with pytest.raises(BadInputError) as err:
        lh.append_events([sample_events(1)[0], bad, sample_events(1)[0]])
    assert message in str(err.value)
    assert lh.table("events.raw").current_snapshot().snapshot_id == before
    assert lh.duckdb().execute("SELECT count(*) FROM events").fetchone()[0] == 3


@pytest.mark.parametrize("name", ["a/b.t", "../x.t", "ns.t/../../x", "ns.", "ns..t", "n s.t", "ns.t.u"])
def test_path_like_table_names_are_refused(lh: Lakehouse, name: str) -> None:
    with pytest.raises(BadNameError):
        lh.table(name)


def test_epoch_ms_and_naive_iso_are_utc(lh: Lakehouse) -> None:
    ms = int(DAY.timestamp() * 1000) + 1234
    lh.append_events([{"ts": ms, "type": "a"}, {"ts": "2026-03-14T05:06:07", "type": "b"}, {"ts": "2026-03-14T05:06:07+02:00", "type": "c"},
                      {"ts": int(DAY.timestamp()), "type": "seconds"}, {"ts": ms * 1000, "type": "micros"}])
    got = dict(lh.duckdb().execute("SELECT type, epoch_ms(ts) FROM events").fetchall())
    assert got["a"] == ms and got["micros"] == ms
    assert got["seconds"] == int(DAY.timestamp()) * 1000  # epoch seconds (Stripe's `created`) are not January 1970
    assert got["b"] == int(datetime(2026, 3, 14, 5, 6, 7, tzinfo=UTC).timestamp() * 1000)
    assert got["c"] == int(datetime(2026, 3, 14, 3, 6, 7, tzinfo=UTC).timestamp() * 1000)
