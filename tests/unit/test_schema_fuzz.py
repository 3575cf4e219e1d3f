"""Fuzz (issue 14): arbitrary JSON values and byte strings through the event parser and the change parser.

Every input is either accepted, and then reads back the same through DuckDB, or rejected with a
`BadInputError` naming the line/field. No other exception, ever. Bounded to a few seconds.
"""

from __future__ import annotations

import io
import json
from typing import Any

import duckdb
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icebergdo.cdc.changes import build_batch, input_ids, parse_changes
from icebergdo.errors import BadInputError
from icebergdo.jsonl import JsonLines, read_records
from icebergdo.schema import events_from_json_lines, events_from_rows
from icebergdo.times import micros_one

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
times = (st.integers(min_value=-(2**64), max_value=2**64) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
         | st.sampled_from(["2026-03-01T10:00:00Z", "2026-03-01 10:00:00.5+02:00", "1772359200", "1772359200000", "2026-02-30T00:00:00Z", ""]))
fields = st.sampled_from(["id", "ts", "type", "source", "namespace", "collection", "payload", "ingested_at", "other"])
events = st.one_of(
    json_values,
    st.fixed_dictionaries({"ts": times, "type": st.text(max_size=10) | json_values},
                          optional={"payload": json_values, "id": st.text(max_size=30) | json_values, "source": json_values}),
    st.dictionaries(fields, json_values | times, max_size=6),
)


def assert_named(e: BadInputError, label: str) -> None:
    assert str(e).startswith(label + ":"), str(e)


def round_trip(table: pa.Table, originals: list[Any]) -> None:
    """What was accepted reads back the same through DuckDB (an independent reader of the Arrow batch)."""
    con = duckdb.connect()
    con.register("batch", table)
    rows = con.execute("SELECT id, epoch_us(ts), type, source, payload FROM batch").fetchall()
    assert len(rows) == len(originals)
    for (rid, ts, kind, source, payload), event in zip(rows, originals, strict=True):
        assert ts == micros_one(event["ts"])
        assert kind == event["type"] and source == event.get("source")
        assert rid == event["id"] if event.get("id") is not None else len(rid) == 26
        if event.get("payload") is None:
            assert payload is None
        else:
            assert json.loads(payload) == event["payload"]


@FUZZ
@given(st.lists(events, min_size=1, max_size=4))
def test_events_are_accepted_and_round_trip_or_rejected_by_line(batch: list[Any]) -> None:
    labels = [f"line {i + 1}" for i in range(len(batch))]
    try:
        from_rows = events_from_rows(batch, labels=labels)
        rows_error = None
    except BadInputError as e:
        rows_error = str(e)
        from_rows = None
    lines = pa.array([json.dumps(e) for e in batch], pa.string())
    try:
        from_lines = events_from_json_lines(lines, lambda i: labels[i])
        lines_error = None
    except BadInputError as e:
        lines_error = str(e)
        from_lines = None
    assert rows_error == lines_error  # same verdict and same message on both paths
    if rows_error is not None:
        assert rows_error.startswith("line "), rows_error
        return
    assert from_rows is not None and from_lines is not None
    round_trip(from_rows, batch)
    round_trip(from_lines, batch)


@FUZZ
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=5))
def test_arbitrary_bytes_as_event_lines(chunks: list[bytes]) -> None:
    data = b"\n".join(chunks) + b"\n"
    src = JsonLines("-", stdin=io.BufferedReader(io.BytesIO(data)))
    try:
        with src:
            for chunk in src.chunks():
                numbers = chunk.numbers.to_pylist()
                events_from_json_lines(chunk.lines, lambda i, numbers=numbers: f"stdin: line {numbers[i]}")
    except BadInputError as e:
        assert str(e).startswith(("stdin: line ", "stdin: cannot read")), str(e)


changes = st.one_of(
    json_values,
    st.fixed_dictionaries({"op": st.sampled_from(["insert", "update", "delete", "upsert"]) | json_values, "id": json_values},
                          optional={"ts": times, "seq": json_values, "row": json_values, "name": json_values, "_id": json_values}),
)


@FUZZ
@given(st.lists(changes, min_size=1, max_size=4))
def test_changes_are_accepted_or_rejected_by_line(batch: list[Any]) -> None:
    labels = [f"c.jsonl: line {i + 1}" for i in range(len(batch))]
    try:
        parsed = parse_changes(batch, ["id"], labels=labels)
        table = build_batch(parsed, ["id"], {}, input_ids("ab" * 16, len(parsed)))
    except BadInputError as e:
        assert str(e).startswith(("c.jsonl: line ", "key field", "field ")), str(e)
        return
    con = duckdb.connect()
    con.register("log", table)
    assert con.execute("SELECT count(*), count(DISTINCT _id) FROM log").fetchone() == (len(batch), len(batch))
    assert con.execute("SELECT list(_op ORDER BY _id) FROM log").fetchone()[0] == [c["op"] for c in batch]


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_change_lines(data: bytes) -> None:
    try:
        values, labels, _ = read_records("-", stdin=io.BufferedReader(io.BytesIO(data)))
        parse_changes(values, ["id"], labels=labels)
    except BadInputError as e:
        assert str(e).startswith(("stdin: line ", "stdin: cannot read")), str(e)
