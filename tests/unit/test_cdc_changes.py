"""CDC change parsing (`icebergdo.cdc.changes`) without I/O: envelopes, key handling, typing, ids.

Every error names the change (its label) and the field; nothing here touches a table.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from icebergdo.cdc.changes import LOG_META, batch_from_arrow, build_batch, key_column, key_text, new_ids, parse_changes
from icebergdo.errors import BadInputError
from icebergdo.schema import TS

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def test_flat_and_row_forms_parse_to_the_same_change() -> None:
    flat, nested, keyed = parse_changes(
        [
            {"op": "insert", "ts": "2026-11-25T10:00:00Z", "seq": 2, "id": "o1", "status": "new"},
            {"op": "insert", "ts": "2026-11-25T10:00:00Z", "seq": 2, "row": {"id": "o1", "status": "new"}},
            {"op": "insert", "ts": "2026-11-25T10:00:00Z", "seq": 2, "key": "o1", "row": {"status": "new"}},
        ],
        ["id"],
    )
    assert flat.row == nested.row == keyed.row == {"id": "o1", "status": "new"}
    assert flat.ts == datetime(2026, 11, 25, 10, tzinfo=UTC) and flat.seq == 2 and flat.op == "insert"


def test_defaults_ts_is_arrival_and_seq_zero_and_deletes_keep_only_the_key() -> None:
    (c,) = parse_changes([{"op": "delete", "id": 5, "status": "gone", "seq": None}], ["id"], now=NOW)
    assert (c.ts, c.seq, c.row, c.label) == (NOW, 0, {"id": 5}, "change #1")


def test_composite_key_given_as_an_object() -> None:
    (c,) = parse_changes([{"op": "update", "key": {"tenant": "t", "id": 1}, "row": {"v": 2}}], ["tenant", "id"], now=NOW)
    assert c.row == {"v": 2, "tenant": "t", "id": 1}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"op": "upsert", "id": 1}, "line 7: field 'op' must be one of insert, update, delete, got 'upsert'"),
        ({"id": 1}, "line 7: field 'op' must be one of"),
        ({"op": "insert", "ts": "yesterday", "id": 1}, "line 7: field 'ts': cannot parse time 'yesterday'"),
        ({"op": "insert", "seq": "3", "id": 1}, "line 7: field 'seq' must be a 64-bit integer, got '3'"),
        ({"op": "insert", "seq": True, "id": 1}, "line 7: field 'seq' must be a 64-bit integer"),
        ({"op": "insert", "seq": 2**63, "id": 1}, "line 7: field 'seq' must be a 64-bit integer"),
        ({"op": "insert", "status": "x"}, "line 7: missing key field 'id'"),
        ({"op": "insert", "id": None}, "line 7: missing key field 'id'"),
        ({"op": "insert", "id": 1, "a.b": 1}, "line 7: invalid field name 'a.b'"),
        ({"op": "insert", "id": 1, "": 1}, "line 7: invalid field name ''"),
        ({"op": "insert", "id": 1, "_seq": 1}, "line 7: field name '_seq' is reserved for the change log"),
        ({"op": "insert", "row": {"id": 1}, "status": "x"}, "line 7: unknown field(s) 'status' next to 'row'"),
        ({"op": "insert", "key": 2, "row": {"id": 1}}, "line 7: key field 'id' is 2 in 'key' but 1 in 'row'"),
        ("not an object", "line 7: expected a JSON object, got str"),
    ],
)
def test_bad_changes_name_the_line_and_field(change: object, message: str) -> None:
    with pytest.raises(BadInputError) as err:
        parse_changes([change], ["id"], labels=["line 7"], now=NOW)
    assert str(err.value).startswith(message), str(err.value)


def test_composite_key_given_as_a_scalar_is_refused() -> None:
    with pytest.raises(BadInputError, match="change #1: field 'key' must be an object with a, b"):
        parse_changes([{"op": "insert", "key": 1, "row": {}}], ["a", "b"])


@pytest.mark.parametrize("changes", [{"op": "insert"}, "text", b"bytes"])
def test_a_single_change_instead_of_a_list_is_refused(changes: object) -> None:
    with pytest.raises(BadInputError, match="expected a list of changes"):
        parse_changes(changes, ["id"])  # type: ignore[arg-type]


# -- the log batch -----------------------------------------------------------------------------
def test_build_batch_layout_and_types() -> None:
    changes = parse_changes(
        [{"op": "insert", "id": 1, "status": "new", "n": 1}, {"op": "update", "id": 1, "n": 2.5, "none": None}, {"op": "delete", "id": 2}],
        ["id"], now=NOW,
    )
    batch = build_batch(changes, ["id"], {}, ids=["A" * 26, "B" * 26, "C" * 26])
    assert batch.schema.names == [*LOG_META.names, "id", "status", "n"]  # all-null new columns are left out
    assert batch.schema.field("_ts").type == TS and not batch.schema.field("id").nullable
    assert batch.column("_key").to_pylist() == ["1", "1", "2"]
    assert batch.column("status").to_pylist() == ["new", None, None]
    assert batch.column("n").to_pylist() == [1.0, 2.5, None]
    assert batch.column("_id").to_pylist() == ["A" * 26, "B" * 26, "C" * 26]


def test_build_batch_casts_to_known_types_or_names_the_change() -> None:
    known = {"id": pa.int64(), "n": pa.int32(), "at": TS}
    changes = parse_changes([{"op": "insert", "id": 1, "n": 7, "at": "2026-11-25T10:00:00Z"}], ["id"], now=NOW)
    batch = build_batch(changes, ["id"], known)
    assert batch.schema.field("n").type == pa.int32() and batch.column("at").to_pylist() == [datetime(2026, 11, 25, 10, tzinfo=UTC)]
    bad = parse_changes([{"op": "insert", "id": 1, "n": 1}, {"op": "insert", "id": 2, "n": "seven"}], ["id"], labels=["line 1", "line 2"], now=NOW)
    with pytest.raises(BadInputError, match="line 2: field 'n' value 'seven' cannot be cast to the collection's type int32"):
        build_batch(bad, ["id"], known)


def test_build_batch_refuses_mixed_key_types_and_mixed_values() -> None:
    mixed_key = parse_changes([{"op": "insert", "id": 1}, {"op": "insert", "id": "1"}], ["id"], labels=["l1", "l2"], now=NOW)
    with pytest.raises(BadInputError, match="l2: key field 'id' is str '1' but the collection's key is int"):
        build_batch(mixed_key, ["id"], {})
    float_key = parse_changes([{"op": "insert", "id": 1.5}], ["id"], labels=["l1"], now=NOW)
    with pytest.raises(BadInputError, match="l1: key field 'id' must be an integer or text, got float"):
        build_batch(float_key, ["id"], {})
    mixed = parse_changes([{"op": "insert", "id": 1, "v": 1}, {"op": "insert", "id": 2, "v": "x"}], ["id"], labels=["l1", "l2"], now=NOW)
    with pytest.raises(BadInputError, match="l2: field 'v' is str but earlier changes gave int"):
        build_batch(mixed, ["id"], {})


def test_batch_from_arrow_matches_the_row_path() -> None:
    rows = [{"op": "insert", "ts": "2026-11-25T10:00:00Z", "id": 1, "s": "a"}, {"op": "delete", "ts": "2026-11-25T10:01:00Z", "id": 2, "s": "b"}]
    ids = ["A" * 26, "B" * 26]
    by_rows = build_batch(parse_changes(rows, ["id"]), ["id"], {}, ids=ids)
    by_arrow = batch_from_arrow(pa.Table.from_pylist(rows), ["id"], {}, ids=ids)
    assert by_arrow.select(by_rows.column_names).to_pylist() == by_rows.to_pylist()


@pytest.mark.parametrize(
    "table, message",
    [
        (pa.table({"id": [1]}), "missing column 'op'"),
        (pa.table({"op": ["merge"], "id": [1]}), "row 1: field 'op' must be one of"),
        (pa.table({"op": ["insert"]}), "missing key column 'id'"),
        (pa.table({"op": ["insert", "insert"], "id": [1, None]}), "row 2: missing key field 'id'"),
        (pa.table({"op": ["insert"], "id": [1], "_op": ["x"]}), "invalid or reserved column name '_op'"),
    ],
)
def test_batch_from_arrow_errors(table: pa.Table, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        batch_from_arrow(table, ["id"], {})


# -- keys and ids ------------------------------------------------------------------------------
key_values = st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=20))


@given(st.lists(key_values, min_size=1, max_size=20).filter(lambda v: len({type(x) for x in v}) == 1))
def test_key_column_equals_key_text_for_single_keys(values: list[object]) -> None:
    assert key_column([pa.array(values)]).to_pylist() == [key_text([v]) for v in values]


@given(st.lists(st.tuples(st.text(max_size=5), st.integers(-5, 5)), min_size=1, max_size=10))
def test_composite_keys_are_json_lists(values: list[tuple[str, int]]) -> None:
    col = key_column([pa.array([a for a, _ in values]), pa.array([b for _, b in values])])
    assert [json.loads(k) for k in col.to_pylist()] == [[a, b] for a, b in values]


def test_new_ids_are_ulids_strictly_increasing_across_calls() -> None:
    ids = new_ids(1000) + new_ids(1) + new_ids(500)
    assert all(len(i) == 26 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert new_ids(0) == []
