"""CDC collections: layout, fold rules, bad input, crash repair, time travel and tags, event routing."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from icebergdo import BadInputError, BadNameError, Lakehouse, cdc
from icebergdo.engines.duck import connect
from tests.integration.test_cdc_property import plain_fold

pytestmark = pytest.mark.rest_backend  # also on the `rest` backend (tests/conftest.py)

DAY = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)


def ts(minutes: float) -> str:
    return (DAY + timedelta(minutes=minutes)).isoformat()


def duck_rows(lh: Lakehouse, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    rel = connect(lh.config).execute(sql, params or [])
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


def state_via_duckdb(lh: Lakehouse, coll: cdc.Collection, snapshot_id: int | None = None) -> dict[Any, dict[str, Any]]:
    table = lh.catalog.load_table(coll.state_name)
    extra = f", snapshot_from_id => {int(snapshot_id)}" if snapshot_id is not None else ""
    rows = duck_rows(lh, f"SELECT * FROM iceberg_scan('{table.metadata_location}'{extra})")
    return {r["id"]: {k: v for k, v in r.items() if not k.startswith("_")} for r in rows}


def snapshot_ids(lh: Lakehouse, coll: cdc.Collection) -> tuple[Any, Any]:
    out = []
    for name in (coll.log_name, coll.state_name):
        try:
            t = lh.catalog.load_table(name)
        except Exception:  # noqa: BLE001 - not created yet
            out.append("missing")
            continue
        out.append((t.metadata.current_snapshot_id, t.schema().schema_id))
    return tuple(out)


def test_fold_rules_layout_and_duckdb(lh: Lakehouse) -> None:
    coll = lh.collection("users", "profiles")
    coll.apply(
        [
            {"op": "insert", "id": 1, "ts": ts(0), "name": "ann"},
            {"op": "insert", "id": 2, "ts": ts(1), "name": "bob", "age": 40},
            {"op": "update", "id": 1, "ts": ts(-5), "name": "stale"},  # older than the insert: ignored
            {"op": "update", "id": 3, "ts": ts(2), "name": "cy"},  # update of an unknown key: upsert
        ]
    )
    coll.apply(
        [
            {"op": "delete", "id": 2, "ts": ts(60 * 24)},  # next day
            {"op": "update", "id": 1, "ts": ts(3), "row": {"name": "ann2", "vip": True}},  # row format, new field
        ]
    )
    coll.apply([{"op": "insert", "id": 2, "ts": ts(30), "name": "late"}])  # older than the delete: stays deleted
    assert state_via_duckdb(lh, coll) == {
        1: {"id": 1, "name": "ann2", "age": None, "vip": True},
        3: {"id": 3, "name": "cy", "age": None, "vip": None},
    }
    state = lh.catalog.load_table("users.profiles")
    assert json.loads(state.properties[cdc.P_KEY]) == ["id"]
    wh = lh.config.warehouse
    data = [t.file.file_path for t in state.scan().plan_files()]
    assert data and all(re.match(rf"{re.escape(wh)}/users/profiles/data/id_bucket=\d+/[0-9A-Z]{{26}}\.parquet$", p) for p in data), data
    deltas = [t.file.file_path for t in lh.catalog.load_table("users.profiles__deltas").scan().plan_files()]
    days = {re.match(rf"{re.escape(wh)}/users/profiles/deltas/(\d{{4}}/\d{{2}}/\d{{2}})/[0-9A-Z]{{26}}\.parquet$", p).group(1) for p in deltas}
    assert days == {"2026/02/03", "2026/02/04"}
    log = duck_rows(lh, f"SELECT _op, _key, id, name FROM iceberg_scan('{lh.catalog.load_table(coll.log_name).metadata_location}') ORDER BY _ts, _seq, _id")
    assert [(r["_op"], r["id"]) for r in log] == [
        ("update", 1), ("insert", 1), ("insert", 2), ("update", 3), ("update", 1), ("insert", 2), ("delete", 2)
    ]
    # Reopening finds the stored key; another key is refused.
    assert lh.collection("users", "profiles").key == ["id"]
    with pytest.raises(BadInputError, match="has key"):
        lh.collection("users", "profiles", key=["email"])


def test_seq_breaks_ties_and_composite_keys(lh: Lakehouse) -> None:
    coll = lh.collection("shop", "lines", key=["order", "line"])
    coll.apply(
        [
            {"op": "insert", "order": "o1", "line": 1, "ts": ts(0), "seq": 2, "qty": 5},
            {"op": "update", "order": "o1", "line": 1, "ts": ts(0), "seq": 1, "qty": 9},  # lower seq: ignored
            {"op": "insert", "order": "o1", "line": 2, "ts": ts(0), "qty": 1},
            {"op": "insert", "order": "o2", "line": 1, "ts": ts(0), "qty": 7},
        ]
    )
    coll.apply([{"op": "delete", "order": "o1", "line": 2, "ts": ts(1)}, {"op": "update", "order": "o2", "line": 1, "ts": ts(0), "qty": 8}])
    got = {(r["order"], r["line"]): r["qty"] for r in coll.read().to_pylist()}
    assert got == {("o1", 1): 5, ("o2", 1): 8}  # equal (ts, seq): the later arrival wins


def test_bad_input_changes_neither_table(lh: Lakehouse) -> None:
    coll = lh.collection("app", "items")
    with pytest.raises(BadInputError, match="missing key field 'id'"):
        coll.apply([{"op": "insert", "ts": ts(0), "name": "no key"}])
    assert snapshot_ids(lh, coll) == ("missing", "missing")  # nothing created by a rejected first batch
    coll.apply([{"op": "insert", "id": 1, "ts": ts(0), "n": 1, "name": "x"}])
    before = snapshot_ids(lh, coll)
    bad = {
        "missing key field 'id'": [{"op": "insert", "id": 2, "ts": ts(1)}, {"op": "update", "ts": ts(1), "n": 2}],
        "field 'op' must be one of": [{"op": "upsert", "id": 2, "ts": ts(1)}],
        r"change #2: key field 'id' is str": [{"op": "insert", "id": 3, "ts": ts(1)}, {"op": "insert", "id": "4", "ts": ts(1)}],
        r"field 'n' value 'abc' cannot be cast": [{"op": "insert", "id": 5, "ts": ts(1), "n": "abc"}],
        r"field 'n' value 1.5 cannot be cast": [{"op": "insert", "id": 5, "ts": ts(1), "n": 1.5}],
        "cannot parse time": [{"op": "insert", "id": 6, "ts": "yesterday"}],
        "reserved": [{"op": "insert", "id": 7, "ts": ts(1), "_op": "x"}],
        "newcol": [{"op": "insert", "id": 8, "ts": ts(1), "newcol": 1}, {"op": "insert", "id": 9, "ts": ts(1), "newcol": "one"}],
    }
    for message, changes in bad.items():
        with pytest.raises(BadInputError, match=message):
            coll.apply(changes)
        assert snapshot_ids(lh, coll) == before, message
    assert sorted(coll.read().column("id").to_pylist()) == [1]
    assert "newcol" not in lh.catalog.load_table(coll.state_name).schema().column_names
    for ns in ("events", "catalog"):
        with pytest.raises(BadNameError, match="reserved"):
            lh.collection(ns, "x")
    with pytest.raises(BadNameError):
        lh.collection("app", "../x")


def test_crash_between_log_and_state_commit_is_repaired(lh: Lakehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    coll = lh.collection("crm", "contacts")
    stream = [{"op": "insert", "id": i, "ts": ts(i), "v": i} for i in range(20)]
    coll.apply(stream)
    lost = [{"op": "update", "id": i, "ts": ts(100 + i), "v": -i} for i in range(0, 20, 3)] + [
        {"op": "delete", "id": 1, "ts": ts(200)},
        {"op": "insert", "id": 99, "ts": ts(201), "v": 99},
    ]

    def crash(tx: Any) -> None:
        raise SystemExit("killed between the log commit and the state commit")

    monkeypatch.setattr(cdc.state, "_commit_state", crash)
    state_before = lh.catalog.load_table(coll.state_name).metadata.current_snapshot_id
    with pytest.raises(SystemExit):
        coll.apply(lost)
    monkeypatch.undo()
    assert lh.catalog.load_table(coll.state_name).metadata.current_snapshot_id == state_before
    assert lh.catalog.load_table(coll.log_name).scan().to_arrow().num_rows == len(stream) + len(lost)
    assert state_via_duckdb(lh, coll) == {k: {"id": k, "v": k} for k in range(20)}  # stale until repaired

    fresh = Lakehouse.open(lh.config).collection("crm", "contacts")  # another process, after the crash
    result = fresh.repair()
    assert result.folded == len(lost)
    assert state_via_duckdb(lh, coll) == plain_fold(stream + lost)
    assert fresh.repair().folded == 0  # nothing left to fold

    # A crash followed directly by the next apply: the apply folds the missed part too.
    monkeypatch.setattr(cdc.state, "_commit_state", crash)
    more = [{"op": "delete", "id": 2, "ts": ts(300)}]
    with pytest.raises(SystemExit):
        coll.apply(more)
    monkeypatch.undo()
    last = [{"op": "update", "id": 3, "ts": ts(301), "v": 333}]
    assert coll.apply(last).folded == 2
    assert state_via_duckdb(lh, coll) == plain_fold(stream + lost + more + last)


def test_as_of_tags_and_export_read_through_duckdb(lh: Lakehouse) -> None:
    coll = lh.collection("inv", "stock")
    coll.apply([{"op": "insert", "id": f"sku{i}", "ts": ts(i), "qty": i} for i in range(5)])
    first = coll.read()
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    coll.apply([{"op": "update", "id": "sku1", "ts": ts(10), "qty": 100}, {"op": "delete", "id": "sku4", "ts": ts(10)}])
    expected_first = {r["id"]: {"id": r["id"], "qty": r["qty"]} for r in first.to_pylist()}
    assert {r["id"]: {"id": r["id"], "qty": r["qty"]} for r in coll.as_of(between).to_pylist()} == expected_first
    sid = coll.snapshot_id_as_of(between)
    assert state_via_duckdb(lh, coll, sid) == expected_first
    loc = lh.catalog.load_table(coll.state_name).metadata_location
    by_time = duck_rows(lh, f"SELECT id, qty FROM iceberg_scan('{loc}', snapshot_from_timestamp => ?::TIMESTAMP) ORDER BY id", [between.replace(tzinfo=None)])
    assert {r["id"]: r for r in by_time} == expected_first
    assert coll.as_of(DAY - timedelta(days=400)).num_rows == 0

    today = datetime.now(UTC).date()
    tag = coll.snapshot(export=True, retention_days=30)
    assert tag["tag"] == f"snapshot-{today.isoformat()}"
    state = lh.catalog.load_table(coll.state_name)
    ref = state.metadata.refs[tag["tag"]]
    assert ref.snapshot_ref_type == "tag" and ref.max_ref_age_ms == 30 * 86_400_000
    now_state = state_via_duckdb(lh, coll)
    assert now_state["sku1"]["qty"] == 100 and "sku4" not in now_state
    coll.apply([{"op": "delete", "id": "sku0", "ts": ts(20)}])
    assert state_via_duckdb(lh, coll, ref.snapshot_id) == now_state  # the tag still shows the tagged state
    assert coll.read(tag["tag"]).num_rows == len(now_state)
    assert tag["path"] == f"{lh.config.warehouse}/inv/stock/snapshots/{today.isoformat()}.parquet"
    exported = duck_rows(lh, "SELECT id, qty FROM read_parquet(?) ORDER BY id", [tag["path"]])
    assert {r["id"]: r for r in exported} == now_state

    # A past day's snapshot tags the state as of the end of that day (none existed before it).
    with pytest.raises(Exception, match="no state existed"):
        coll.snapshot("2020-01-01")
    # Event time: the fold of the log up to a change time, late arrivals included.
    coll.apply([{"op": "update", "id": "sku2", "ts": ts(2.5), "qty": 22}])  # arrives late, happened early
    at = {r["id"]: r["qty"] for r in coll.state_at(ts(5)).to_pylist()}
    assert at == {"sku0": 0, "sku1": 1, "sku2": 22, "sku3": 3, "sku4": 4}
    assert {r["id"]: r["qty"] for r in coll.state_at(ts(2.2)).to_pylist()} == {"sku0": 0, "sku1": 1, "sku2": 2}
    changes = coll.changes(since=ts(5), until=ts(15))
    assert [(r["_op"], r["id"]) for r in changes.to_pylist()] == [("update", "sku1"), ("delete", "sku4")]


def test_declared_schema_creates_both_tables_and_casts(lh: Lakehouse) -> None:
    import pyarrow as pa

    schema = pa.schema([("sku", pa.string()), ("qty", pa.int32()), ("price", pa.float64()), ("seen", pa.timestamp("us", tz="UTC"))])
    coll = lh.collection("typed", "items", key="sku", schema=schema)
    for name in (coll.state_name, coll.log_name):
        t = lh.catalog.load_table(name)
        assert t.current_snapshot() is None and {"sku", "qty", "price", "seen"} <= set(t.schema().column_names)
    coll.apply([{"op": "insert", "sku": "a", "ts": ts(0), "qty": 3, "price": 2, "seen": "2026-02-03T08:00:00Z"}])
    row = duck_rows(lh, f"SELECT sku, qty, price, seen FROM iceberg_scan('{lh.catalog.load_table(coll.state_name).metadata_location}')")[0]
    assert row == {"sku": "a", "qty": 3, "price": 2.0, "seen": datetime(2026, 2, 3, 8, tzinfo=UTC)}
    with pytest.raises(BadInputError, match="field 'qty' value 'many' cannot be cast"):
        coll.apply([{"op": "update", "sku": "a", "ts": ts(1), "qty": "many"}])
    with pytest.raises(BadInputError, match="key field 'sku' is int"):
        coll.apply([{"op": "update", "sku": 1, "ts": ts(1)}])


def test_only_affected_files_are_rewritten(lh: Lakehouse) -> None:
    coll = lh.collection("big", "t", buckets=8)
    coll.apply([{"op": "insert", "id": i, "ts": ts(0), "v": i} for i in range(2000)])
    files = {t.file.file_path for t in lh.catalog.load_table(coll.state_name).scan().plan_files()}
    assert len(files) == 8
    result = coll.apply([{"op": "update", "id": 7, "ts": ts(1), "v": -7}])
    assert (result.files_rewritten, result.files_added) == (1, 1)
    after = {t.file.file_path for t in lh.catalog.load_table(coll.state_name).scan().plan_files()}
    assert len(after - files) == 1 and len(files - after) == 1
    stale = coll.apply([{"op": "update", "id": 8, "ts": ts(-1), "v": -8}])  # older than the state: no rewrite
    assert stale.files_rewritten == 0 and stale.files_added == 0
    got = duck_rows(lh, f"SELECT count(*) AS n, sum(v) AS s FROM iceberg_scan('{lh.catalog.load_table(coll.state_name).metadata_location}')")
    assert got == [{"n": 2000, "s": sum(range(2000)) - 14}]


def test_concurrent_applies_from_two_processes_agree_with_the_fold(lh: Lakehouse) -> None:
    lh.collection("conc", "c").apply([{"op": "insert", "id": 0, "ts": ts(0), "v": 0}])
    streams = [
        [{"op": "insert" if i % 4 else "delete", "id": (i * 7 + w) % 15, "ts": ts(i), "seq": w, "v": i * 10 + w} for i in range(12)]
        for w in range(2)
    ]
    errors: list[BaseException] = []

    def worker(stream: list[dict[str, Any]]) -> None:
        try:
            coll = Lakehouse.open(lh.config).collection("conc", "c")
            for i in range(0, len(stream), 3):
                coll.apply(stream[i : i + 3])
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # Arrival order across the two writers is unknown, but (ts, seq) is unique per key here.
    expected = plain_fold([{"op": "insert", "id": 0, "ts": ts(0), "v": 0}] + sorted(streams[0] + streams[1], key=lambda c: (c["ts"], c["seq"])))
    coll = lh.collection("conc", "c")
    assert state_via_duckdb(lh, coll) == expected
    assert coll.repair().folded == 0


def test_events_route_to_collections(lh: Lakehouse) -> None:
    lh.append_events(
        [
            {"ts": ts(0), "type": "cdc.insert", "namespace": "app", "collection": "users", "payload": {"id": "u1", "name": "a"}},
            {"ts": ts(1), "type": "collection.insert", "namespace": "app", "collection": "users", "payload": {"id": "u2", "name": "b"}},
            {"ts": ts(2), "type": "cdc.update", "namespace": "app", "collection": "users", "payload": {"row": {"id": "u1", "name": "a2"}}},
            {"ts": ts(3), "type": "collection.update", "payload": {"i": 1}},  # no namespace/collection: just an event
            {"ts": ts(4), "type": "cdc.insert", "namespace": "app", "collection": "users", "payload": {"name": "no key"}},  # skipped
            {"ts": ts(5), "type": "webhook", "namespace": "app", "collection": "users", "payload": {"id": "u3"}},
        ]
    )
    lh.append_events([{"ts": ts(6), "type": "cdc.delete", "namespace": "app", "collection": "users", "payload": {"id": "u2"}}])
    coll = lh.collection("app", "users")
    assert state_via_duckdb(lh, coll) == {"u1": {"id": "u1", "name": "a2"}}
    con = lh.duckdb()
    assert con.execute("SELECT count(*) FROM events").fetchone() == (7,)  # every event is stored, routed or not
    # The change id is the event id.
    ids = {r[0] for r in con.execute("SELECT id FROM events WHERE type LIKE 'cdc.%' OR type LIKE 'collection.%'").fetchall()}
    assert set(coll.changes().column("_id").to_pylist()) <= ids


def test_arrow_changes_bulk_path(lh: Lakehouse) -> None:
    import pyarrow as pa

    coll = lh.collection("bulk", "t")
    changes = pa.table(
        {
            "op": ["insert", "insert", "update", "delete"],
            "id": pa.array([1, 2, 1, 2], pa.int64()),
            "ts": pa.array([1000, 1000, 2000, 3000], pa.int64()),  # epoch ms
            "name": ["a", "b", "a2", None],
        }
    )
    coll.apply(changes)
    assert state_via_duckdb(lh, coll) == {1: {"id": 1, "name": "a2"}}
    before = snapshot_ids(lh, coll)
    with pytest.raises(BadInputError, match="row 2: field 'op'"):
        coll.apply(pa.table({"op": ["insert", "merge"], "id": pa.array([5, 6], pa.int64())}))
    with pytest.raises(BadInputError, match="key field 'id' is string"):
        coll.apply(pa.table({"op": ["insert"], "id": ["5"]}))
    assert snapshot_ids(lh, coll) == before


def test_cli_apply_show_snapshot_changes(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from icebergdo.cli import main

    home = str(tmp_path / "lh")
    good = tmp_path / "c.jsonl"
    good.write_text(
        "\n".join(
            json.dumps(c)
            for c in [
                {"op": "insert", "id": "a", "ts": ts(0), "n": 1},
                {"op": "insert", "id": "b", "ts": ts(1), "n": 2},
                {"op": "delete", "id": "a", "ts": ts(2)},
            ]
        )
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"op": "insert", "id": "c", "ts": ts(3)}) + "\n" + json.dumps({"op": "nope", "id": "d"}) + "\n")
    assert main(["--home", home, "cdc", "apply", "app", "things", str(bad)]) == 2  # no lakehouse there yet
    assert "init" in capsys.readouterr().err
    assert main(["--home", home, "init"]) == 0
    capsys.readouterr()
    assert main(["--home", home, "cdc", "apply", "app", "things", str(bad)]) == 3
    assert "bad.jsonl: line 2: field 'op'" in capsys.readouterr().err
    assert main(["--home", home, "cdc", "apply", "app", "things", str(good), "--key", "id", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changes"] == 3 and out["collection"] == "app.things"
    assert main(["--home", home, "cdc", "show", "app", "things", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["id"], r["n"]) for r in rows] == [("b", 2)]
    assert main(["--home", home, "cdc", "snapshot", "app", "things", "--export"]) == 0
    assert "snapshots/" in capsys.readouterr().out
    assert main(["--home", home, "cdc", "changes", "app", "things", "--json"]) == 0
    assert [r["_op"] for r in json.loads(capsys.readouterr().out)] == ["insert", "insert", "delete"]
    assert main(["--home", home, "cdc", "apply", "events", "x", str(good)]) != 0
    assert "reserved" in capsys.readouterr().err


def test_fold_recomputes_when_a_concurrent_rewrite_replaced_its_files(lh: Lakehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compaction that lands between the fold's read and its commit: the commit fails validation
    (its input files are gone), the fold is recomputed on the new files, nothing is lost or doubled."""
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    coll = lh.collection("cc", "t", buckets=2)
    first = [{"op": "insert", "id": i, "ts": ts(0), "v": i} for i in range(50)]
    coll.apply(first)
    real_commit = cdc.state._commit_state
    rewrites = []

    def compact_then_commit(tx: Any) -> None:
        if not rewrites:  # another process rewrites every state file (same rows, new files) right now
            other = Lakehouse.open(lh.config).catalog.load_table(coll.state_name)
            files = [t.file for t in other.scan().plan_files()]
            rows = other.scan().to_arrow()
            ctx = other.transaction()
            with ctx.update_snapshot().overwrite() as ow:
                for f in files:
                    ow.delete_data_file(f)
                for df in _dataframe_to_data_files(table_metadata=ctx.table_metadata, df=rows, io=other.io):
                    ow.append_data_file(df)
            ctx.commit_transaction()
            rewrites.append(len(files))
        real_commit(tx)

    monkeypatch.setattr(cdc.state, "_commit_state", compact_then_commit)
    second = [{"op": "update", "id": 3, "ts": ts(1), "v": 300}, {"op": "delete", "id": 4, "ts": ts(1)}, {"op": "insert", "id": 77, "ts": ts(1), "v": 77}]
    result = coll.apply(second)
    assert rewrites == [2] and result.attempts == 2
    assert state_via_duckdb(lh, coll) == plain_fold(first + second)
