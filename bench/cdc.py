"""CDC apply next to pyiceberg's `Table.upsert`, on the same data, in one run.

    python bench/cdc.py                                  # 100k-row state, 2k changes, 3 rounds
    python bench/cdc.py --rows 1000000 --changes 10000   # the full size from the issue

Both sides start from the same current state (`--rows` keys, bucket(16, id) partitions, one
embedded lakehouse: local folder + SQLite). Each round draws `--changes` changes: 10% deletes of
existing keys, 80% updates of existing keys, 10% inserts of new keys, and applies them

- with `Collection.apply` (log append + one copy-on-write commit replacing only affected files), and
- with pyiceberg `Table.upsert` of the updated/inserted rows plus `Table.delete` of the deleted keys
  (upsert has no deletes) on a plain Iceberg table holding the same rows.

Upsert runs in a child process with a time cap (`--upsert-cap`, seconds); a capped run is
reported as "> cap" and its ratio as a lower bound. After each round that upsert finished, both
tables are read back with DuckDB and compared.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyiceberg.expressions import In  # noqa: E402

from icebergdo import Lakehouse  # noqa: E402
from icebergdo.engines.duck import connect  # noqa: E402

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def initial_rows(n: int) -> pa.Table:
    return pa.table(
        {
            "op": pa.array(["insert"] * n),
            "id": pa.array(range(n), pa.int64()),
            "ts": pa.array([T0] * n, pa.timestamp("us", tz="UTC")),
            "name": pa.array([f"customer-{i}" for i in range(n)]),
            "amount": pa.array([i % 1000 / 10 for i in range(n)], pa.float64()),
            "status": pa.array([["new", "active", "gone"][i % 3] for i in range(n)]),
        }
    )


def draw_changes(rng: random.Random, live: list[int], next_id: int, n: int, when: datetime) -> tuple[pa.Table, int]:
    n_del, n_ins = n // 10, n // 10
    picked = rng.sample(live, n - n_ins)
    dels, upds = picked[:n_del], picked[n_del:]
    ins = list(range(next_id, next_id + n_ins))
    ops = ["delete"] * len(dels) + ["update"] * len(upds) + ["insert"] * len(ins)
    ids = dels + upds + ins
    return (
        pa.table(
            {
                "op": pa.array(ops),
                "id": pa.array(ids, pa.int64()),
                "ts": pa.array([when] * len(ids), pa.timestamp("us", tz="UTC")),
                "name": pa.array([f"customer-{i}" for i in ids]),
                "amount": pa.array([rng.random() * 100 for _ in ids], pa.float64()),
                "status": pa.array([rng.choice(["new", "active", "gone"]) for _ in ids]),
            }
        ),
        next_id + n_ins,
    )


def _upsert_child(home: str, changes: pa.Table, out: Any) -> None:
    """Apply `changes` to `bench.upsert` with pyiceberg's own upsert + delete; report time and files."""
    lh = Lakehouse.open(home)
    table = lh.catalog.load_table("bench.upsert")
    before = {t.file.file_path for t in table.scan().plan_files()}
    puts = changes.filter(pa.compute.not_equal(changes.column("op"), "delete"))
    dels = changes.filter(pa.compute.equal(changes.column("op"), "delete")).column("id").to_pylist()
    rows = puts.select(["id", "name", "amount", "status"])
    rows = rows.append_column("_ts", puts.column("ts")).append_column("_seq", pa.array([0] * puts.num_rows, pa.int64()))
    rows = rows.append_column("_id", pa.array([f"u{i}" for i in range(puts.num_rows)], pa.string()))
    arrow_schema = table.schema().as_arrow()
    rows = pa.Table.from_arrays([rows.column(f.name).cast(f.type) for f in arrow_schema], schema=arrow_schema)
    start = time.perf_counter()
    res = table.upsert(rows, join_cols=["id"])
    mid = time.perf_counter()
    table.delete(In("id", dels))
    end = time.perf_counter()
    after = {t.file.file_path for t in table.refresh().scan().plan_files()}
    out.put({"seconds": end - start, "upsert": mid - start, "delete": end - mid, "rewritten": len(before - after),
             "updated": res.rows_updated, "inserted": res.rows_inserted})


def run_upsert(home: str, changes: pa.Table, cap: float) -> dict[str, Any] | None:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_upsert_child, args=(home, changes, q))
    p.start()
    p.join(cap)
    if p.is_alive():
        p.kill()
        p.join()
        return None
    return q.get() if not q.empty() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000, help="keys in the initial current state (default 100k)")
    ap.add_argument("--changes", type=int, default=2_000, help="changes per round, 10%% deletes (default 2k)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (default 3)")
    ap.add_argument("--buckets", type=int, default=16, help="bucket(N, id) partitions of the state (default 16)")
    ap.add_argument("--upsert-cap", type=float, default=600.0, help="seconds before an upsert round is stopped (default 600)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary lakehouse")
    args = ap.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="icebergdo-bench-cdc-"))
    home = str(folder / "lh")
    rng = random.Random(7)
    try:
        lh = Lakehouse.open(home)
        coll = lh.collection("bench", "cdc", buckets=args.buckets)
        t = time.perf_counter()
        coll.apply(initial_rows(args.rows))
        load_s = time.perf_counter() - t
        state = lh.catalog.load_table(coll.state_name)
        # The upsert side: a plain Iceberg table with the same schema, partitioning and rows.
        target = lh.create_table(
            "bench.upsert", state.schema(), data_path="bench/upsert/data", partition_spec=state.spec(), sort_order=state.sort_order()
        )
        target.append(coll.read().select(target.schema().column_names).cast(target.schema().as_arrow()))
        print(f"state: {args.rows:,} rows in {len(list(state.scan().plan_files()))} files (initial load via apply: {load_s:.1f} s); "
              f"{args.changes:,} changes/round, {args.rounds} round(s)")

        live, next_id = list(range(args.rows)), args.rows
        ours: list[float] = []
        theirs: list[float] = []
        capped = 0
        for r in range(args.rounds):
            changes, next_id = draw_changes(rng, live, next_id, args.changes, T0 + timedelta(hours=r + 1))
            t = time.perf_counter()
            res = coll.apply(changes)
            ours.append(time.perf_counter() - t)
            gone = set(changes.filter(pa.compute.equal(changes.column("op"), "delete")).column("id").to_pylist())
            live = [k for k in live if k not in gone] + [k for k, o in zip(changes.column("id").to_pylist(), changes.column("op").to_pylist(), strict=True) if o == "insert"]
            files_now = len(list(lh.catalog.load_table(coll.state_name).scan().plan_files()))
            print(f"round {r + 1}: apply {ours[-1]:.2f} s  (files rewritten {res.files_rewritten} of {files_now}, added {res.files_added}, "
                  f"rows written {res.rows_written:,}; " + ", ".join(f"{k} {v:.2f}" for k, v in res.seconds.items()) + ")")
            up = run_upsert(home, changes, args.upsert_cap)
            if up is None:
                capped += 1
                theirs.append(args.upsert_cap)
                print(f"round {r + 1}: upsert+delete stopped at the {args.upsert_cap:.0f} s cap")
                break  # the two tables differ from here on
            theirs.append(up["seconds"])
            print(f"round {r + 1}: upsert+delete {up['seconds']:.2f} s  (upsert {up['upsert']:.2f}, delete {up['delete']:.2f}; "
                  f"files rewritten {up['rewritten']}; updated {up['updated']:,}, inserted {up['inserted']:,})")
            con = connect(lh.config)
            a = lh.catalog.load_table(coll.state_name).metadata_location
            b = lh.catalog.load_table("bench.upsert").metadata_location
            diff = con.execute(
                f"SELECT count(*) FROM ((SELECT id, name, amount, status FROM iceberg_scan('{a}') EXCEPT ALL "
                f"SELECT id, name, amount, status FROM iceberg_scan('{b}')) UNION ALL (SELECT id, name, amount, status FROM iceberg_scan('{b}') "
                f"EXCEPT ALL SELECT id, name, amount, status FROM iceberg_scan('{a}')))"
            ).fetchone()[0]
            assert diff == 0, f"round {r + 1}: the CDC state and the upsert table differ in {diff} rows"
            print(f"round {r + 1}: both tables read back equal through DuckDB ({len(live):,} rows)")

        med_ours, med_theirs = statistics.median(ours), statistics.median(theirs)
        bound = ">= " if capped else ""
        print()
        print(f"{'variant':<34}{'median s':>10}{'changes/s':>12}")
        print(f"{'icebergdo Collection.apply':<34}{med_ours:>10.2f}{args.changes / med_ours:>12,.0f}")
        print(f"{'pyiceberg upsert + delete':<34}{(bound + f'{med_theirs:.2f}'):>10}{args.changes / med_theirs:>12,.0f}")
        print(f"ratio (upsert / apply): {bound}{med_theirs / med_ours:.1f}x faster  [rows={args.rows:,} changes={args.changes:,} rounds={len(ours)}]")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
