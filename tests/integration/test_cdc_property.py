"""Property: any change stream, applied in any batch sizes, leaves the state equal to a plain fold.

Streams mix inserts, updates, deletes, duplicates, equal timestamps and out-of-order delivery,
and a field that appears part-way (schema evolution). The state is read back through DuckDB.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icebergdo import Lakehouse
from icebergdo.engines.duck import connect

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in epoch ms
_names = itertools.count()


def plain_fold(stream: list[dict[str, Any]], key: str = "id") -> dict[Any, dict[str, Any]]:
    """The reference: per key, the change with the greatest (ts, seq, arrival) wins; deletes remove."""
    best: dict[Any, tuple[tuple[int, int, int], dict[str, Any]]] = {}
    for arrival, ch in enumerate(stream):
        version = (ch["ts"], ch.get("seq") or 0, arrival)
        k = ch[key]
        if k not in best or version >= best[k][0]:
            best[k] = (version, ch)
    out = {}
    for k, (_, ch) in best.items():
        if ch["op"] != "delete":
            out[k] = {f: v for f, v in ch.items() if f not in ("op", "ts", "seq")}
    return out


def duck_state(lh: Lakehouse, name: str, fields: list[str]) -> dict[Any, dict[str, Any]]:
    table = lh.catalog.load_table(name)
    if table.current_snapshot() is None:
        return {}
    con = connect(lh.config)
    rel = con.execute(f"SELECT * FROM iceberg_scan('{table.metadata_location}')")
    cols = [d[0] for d in rel.description]
    rows = [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
    keys = [r["id"] for r in rows]
    assert len(keys) == len(set(keys)), "a key appears twice in the current state"
    return {r["id"]: {f: r.get(f) for f in fields} for r in rows}


change = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["insert", "update", "delete"]),
        "id": st.integers(0, 7),
        "ts": st.integers(0, 6).map(lambda i: T0 + i * 1000),
        "v": st.integers(-5, 5),
    },
    optional={"seq": st.integers(0, 2), "note": st.sampled_from(["a", "b", "ü"])},
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=st.lists(change, min_size=1, max_size=40), cuts=st.lists(st.integers(1, 15), min_size=1, max_size=6))
def test_state_equals_plain_fold_of_the_stream(lh: Lakehouse, stream: list[dict[str, Any]], cuts: list[int]) -> None:
    coll = lh.collection("prop", f"c{next(_names)}")
    pos, batches = 0, []
    for size in itertools.cycle(cuts):
        if pos >= len(stream):
            break
        batches.append(stream[pos : pos + size])
        pos += size
    for batch in batches:
        coll.apply([dict(c) for c in batch])
    expected = plain_fold(stream)
    fields = ["id", "v", "note"]
    expected = {k: {f: row.get(f) for f in fields} for k, row in expected.items()}
    assert duck_state(lh, coll.state_name, fields) == expected
    # The log holds every change, in arrival order of ids.
    logged = lh.catalog.load_table(coll.log_name).scan().to_arrow()
    assert logged.num_rows == len(stream)
