"""Event preparation: the same bad event gets the same message through dicts, Arrow and JSON lines;
good events come out the same whichever path they took; within-batch deduplication."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from ulid import ULID

from icebergdo.dedupe import Dedupe, drop_duplicates
from icebergdo.errors import BadInputError
from icebergdo.schema import EVENT_ARROW_SCHEMA, check_new_columns, events_from_arrow, events_from_json_lines, events_from_rows
from icebergdo.times import INGEST_RULE, TimeRule

GOOD = {"ts": "2026-03-01T10:00:00Z", "type": "webhook", "source": "stripe", "payload": {"a": 1}}
NOW = datetime(2026, 3, 2, tzinfo=UTC)
DEEP: object = 1
for _ in range(600):
    DEEP = [DEEP]

# (bad event, message after the label, JSON line if json.dumps cannot express it, Arrow-expressible)
BAD = [
    ({"type": "rpc"}, "missing required field 'ts'", None, False),
    ({"ts": "yesterday-ish", "type": "rpc"}, "field 'ts': cannot parse time 'yesterday-ish'", None, True),
    (["not", "an", "object"], "expected a JSON object, got list", None, False),
    ({"ts": "2026-03-01T10:00:00Z", "type": "rpc", "colour": "red"}, "unknown field(s) 'colour'", None, False),
    ({"ts": "2026-03-01T10:00:00Z", "type": "rpc", "payload": float("nan")}, "field 'payload': not JSON-serialisable",
     '{"ts": "2026-03-01T10:00:00Z", "type": "rpc", "payload": NaN}', False),
    ({"ts": "2026-03-01T10:00:00Z", "type": "rpc", "payload": {"x": [1, float("inf")]}}, "field 'payload': not JSON-serialisable",
     '{"ts": "2026-03-01T10:00:00Z", "type": "rpc", "payload": {"x": [1, Infinity]}}', False),
    ({"ts": "2026-03-01T10:00:00Z", "source": "x"}, "field 'type': required", None, True),
    ({"ts": "1960-01-01T00:00:00Z", "type": "a"}, "field 'ts': 1960-01-01T00:00:00Z is before 1970-01-01", None, True),
    ({"ts": "2026-03-01T10:00:00Z", "type": "a", "source": "\ud800"}, "field 'source': not valid Unicode text", None, False),
    ({"ts": "2026-03-01T10:00:00Z", "type": "a", "payload": {"k": "\udc00x"}}, "field 'payload': not valid Unicode text", None, False),
    ({"ts": "2026-03-01T10:00:00Z", "type": "a", "payload": DEEP}, "field 'payload': nested deeper than 512 levels", None, False),
    ({"ts": True, "type": "a"}, "field 'ts': expected ISO-8601 text or an epoch number, got True", None, False),
    ({"ts": 10**30, "type": "a"}, "field 'ts': epoch 1000000000000000000000000000000 out of range", None, False),
    ({"ts": "2026-03-01T10:00:00Z", "type": 5}, "field 'type': expected text, got int", None, False),
    ({"ts": "2026-03-01T10:00:00Z", "type": "a", "id": ""}, "field 'id': must not be empty", None, True),
    ({"ts": "2026-03-01T10:00:00Z", "type": ""}, "field 'type': must not be empty", None, True),
    ({"ts": None, "type": "a"}, "field 'ts': expected ISO-8601 text or an epoch number, got None", None, False),
]


def via_rows(events: list, rule: TimeRule = TimeRule()) -> pa.Table:
    return events_from_rows(events, labels=[f"line {i + 1}" for i in range(len(events))], rule=rule, now=NOW)


def via_lines(lines: list[str], rule: TimeRule = TimeRule()) -> pa.Table:
    return events_from_json_lines(pa.array(lines, pa.string()), lambda i: f"line {i + 1}", rule=rule, now=NOW)


def via_arrow(events: list, rule: TimeRule = TimeRule()) -> pa.Table:
    cols = {name: [e.get(name) for e in events] for name in ("id", "ts", "type", "source", "payload")}
    cols["payload"] = [None if p is None else json.dumps(p) for p in cols["payload"]]
    return events_from_arrow(pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()}), rule=rule, now=NOW)


def message(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(BadInputError) as err:
        fn(*args)
    return str(err.value)


@pytest.mark.parametrize("bad, expected, line, arrow", BAD, ids=[b[1][:40] for b in BAD])
def test_same_message_on_every_path(bad: object, expected: str, line: str | None, arrow: bool) -> None:
    from_rows = message(via_rows, [GOOD, bad, GOOD])
    text = line or json.dumps(bad, ensure_ascii=True)
    from_lines = message(via_lines, [json.dumps(GOOD), text, json.dumps(GOOD)])
    assert from_rows.startswith("line 2: ") and expected in from_rows, from_rows
    assert from_lines == from_rows
    if arrow:
        from_arrow = message(via_arrow, [GOOD, bad, GOOD])
        assert from_arrow == from_rows.replace("line 2: ", "row 2: ", 1)


def test_json_only_problems() -> None:
    good = json.dumps(GOOD)
    cases = {
        '{"ts": "2026-03-01T10:00:00Z", "type": ': "line 2: invalid JSON (Expecting value",
        '{"ts": "2026-03-01T10:00:00Z", "type": "a", "type": "b"}': "line 2: field 'type' appears more than once",
        '{"ts": "2026-03-01T10:00:00Z", "type": "a", "payload": [1,]}': "line 2: invalid JSON",
        '{"ts": "2026-03-01T10:00:00Z", "type": "a", "source": "\\ud800"}': "line 2: field 'source': not valid Unicode text",
        "[" * 5000 + "]" * 5000: "line 2: ",
    }
    for text, expected in cases.items():
        assert message(via_lines, [good, text, good]).startswith(expected), text[:60]


def test_plausibility_window_on_every_path() -> None:
    bad = {"ts": 1772359200, "type": "a"}  # seconds, read as milliseconds: January 1970
    rule = TimeRule(unit="ms", earliest=INGEST_RULE.earliest, ahead=INGEST_RULE.ahead)
    expected = "line 2: field 'ts': 1970-01-21T12:19:19.200000Z is outside the plausible window (not before 2000-01-01"
    assert message(via_rows, [GOOD, bad], rule).startswith(expected)
    assert message(via_lines, [json.dumps(GOOD), json.dumps(bad)], rule).startswith(expected)
    arrow = pa.table({"ts": pa.array([1772359200000, 1772359200], pa.int64()), "type": ["a", "a"]})
    assert message(lambda: events_from_arrow(arrow, rule=rule, now=NOW)).startswith(expected.replace("line 2", "row 2"))
    future = {"ts": (NOW + timedelta(days=2)).isoformat(), "type": "a"}
    assert "at most 1d ahead" in message(via_rows, [future], INGEST_RULE)
    assert via_rows([bad], INGEST_RULE).column("ts").to_pylist() == [datetime(2026, 3, 1, 10, tzinfo=UTC)]  # auto: seconds


def test_good_events_come_out_the_same_on_every_path() -> None:
    events = [
        {"ts": "2026-03-01T10:00:00Z", "type": "webhook", "id": "evt-1", "payload": {"a": [1, 2.5, None, True], "b": "é\"\\"}},
        {"ts": 1772359200123, "type": "rpc", "source": "s", "namespace": "n", "collection": "c", "payload": "text"},
        {"ts": "2026-03-01 11:00:00", "type": "ws", "payload": None, "ingested_at": "2026-03-01T12:00:00Z"},
        {"ts": 1772359200.5, "type": "x", "payload": 12345678901234567890},
        {"ts": "1772359200", "type": "x", "id": "given"},
    ]
    rows = via_rows(events)
    lines = via_lines([json.dumps(e) for e in events])
    assert rows.schema.equals(EVENT_ARROW_SCHEMA) and lines.schema.equals(EVENT_ARROW_SCHEMA)
    for name in ("ts", "type", "source", "namespace", "collection", "ingested_at"):
        assert rows.column(name).to_pylist() == lines.column(name).to_pylist(), name
    for a, b, e in zip(rows.column("payload").to_pylist(), lines.column("payload").to_pylist(), events, strict=True):
        assert (a is None and b is None and e.get("payload") is None) or json.loads(a) == json.loads(b) == e["payload"]
    assert rows.column("id")[0].as_py() == "evt-1" and rows.column("id")[4].as_py() == "given"
    for generated in (rows.column("id")[1].as_py(), lines.column("id")[2].as_py()):
        assert ULID.from_str(generated)
    assert ULID.from_str(rows.column("id")[1].as_py()).milliseconds == 1772359200123
    assert rows.column("ingested_at")[0].as_py() == NOW


def test_skip_reports_every_bad_row_and_keeps_the_rest() -> None:
    problems: list[tuple[int, str]] = []
    lines = [json.dumps(GOOD), "{oops", json.dumps({"type": "x"}), json.dumps(GOOD)]
    table = events_from_json_lines(pa.array(lines), lambda i: f"f: line {i + 1}", skip=True, problems=problems, now=NOW)
    assert table.num_rows == 2
    assert [i for i, _ in problems] == [1, 2]
    assert problems[1][1] == "f: line 3: missing required field 'ts'"


def test_seeded_ids_repeat_and_unseeded_do_not() -> None:
    lines = pa.array([json.dumps(GOOD)] * 3)
    a = events_from_json_lines(lines, str, seed=b"chunk-1").column("id").to_pylist()
    b = events_from_json_lines(lines, str, seed=b"chunk-1").column("id").to_pylist()
    c = events_from_json_lines(lines, str).column("id").to_pylist()
    assert a == b and len(set(a)) == 3 and not set(a) & set(c)


def test_dedupe_keeps_the_first_arrival_within_the_window() -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    batch = pa.table({
        "id": ["a", "b", "a", "c", "b", "a", None, None],
        "n": [0, 1, 2, 3, 4, 5, 6, 7],
        "ingested_at": pa.array([t0 + timedelta(minutes=m) for m in (5, 0, 1, 0, 0, 60 * 30, 0, 0)], pa.timestamp("us", tz="UTC")),
    })
    out = drop_duplicates(batch, Dedupe("id", timedelta(hours=24)))
    # a: first arrival is n=2 (minute 1); n=0 (minute 5) is a repeat; n=5 is 30 h later: a new event.
    # b: n=1 and n=4 arrived together: the earlier in the batch wins. Nulls are never duplicates.
    assert out.column("n").to_pylist() == [1, 2, 3, 5, 6, 7]
    plain = pa.table({"id": ["x", "x", "y"], "n": [0, 1, 2]})
    assert drop_duplicates(plain, Dedupe("id", timedelta(hours=1))).column("n").to_pylist() == [0, 2]
    assert Dedupe.of({"icebergdo.dedupe": "id", "icebergdo.dedupe.window": "2h"}) == Dedupe("id", timedelta(hours=2))
    assert Dedupe.of({}) is None


def test_column_names_that_differ_only_by_case() -> None:
    check_new_columns(["id", "ts"], ["tenant", "region"])
    check_new_columns(["id"], ["id", "tenant", "tenant"])  # the same name again is no collision
    with pytest.raises(BadInputError, match="'ID' differs from the column 'id' only by case"):
        check_new_columns(["id", "ts"], ["ID"])
    with pytest.raises(BadInputError, match="line 3: field 'Tenant' differs from the column 'tenant'"):
        check_new_columns(["id"], ["tenant", "Tenant"], where="line 3: field")


def test_kept_fields_that_differ_from_a_column_only_by_case_name_the_event() -> None:
    ok = events_from_rows([{"ts": 1772359200, "type": "t", "tenant": "a"}], unknown="keep")
    assert ok.column("tenant").to_pylist() == ["a"]
    with pytest.raises(BadInputError, match=r"line 2: field 'ID' differs from the column 'id' only by case"):
        events_from_rows([{"ts": 1772359200, "type": "t"}, {"ts": 1772359200, "type": "t", "ID": "x"}],
                         unknown="keep", labels=["line 1", "line 2"])
    with pytest.raises(BadInputError, match=r"event #2: field 'Tenant' differs from the column 'tenant'"):
        events_from_rows([{"ts": 1772359200, "type": "t", "tenant": "a"}, {"ts": 1772359200, "type": "t", "Tenant": "b"}], unknown="keep")
    with pytest.raises(BadInputError, match=r"Arrow batch: column 'Type' differs from the column 'type' only by case"):
        events_from_arrow(pa.table({"ts": [datetime(2026, 3, 1, tzinfo=UTC)], "type": ["t"], "Type": ["u"]}), unknown="keep")
