"""`icebergdo cdc`: apply change files to a collection, tag point-in-time snapshots, show state and history."""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime
from typing import Any

from icebergdo.errors import BadInputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cdc",
        help="CDC collections: change log + current state as Iceberg tables (apply, snapshot, show, changes, repair)",
        description="A collection NAMESPACE/COLLECTION is two Iceberg tables: the change log "
        "NAMESPACE.COLLECTION__deltas and the current state NAMESPACE.COLLECTION (see docs/cdc.md).",
    )
    cdc = p.add_subparsers(dest="cdc_command", metavar="ACTION", required=True)

    a = cdc.add_parser(
        "apply",
        help="apply a JSON-lines file of changes (log append + fold into the current state)",
        description='Each line: {"op": "insert"|"update"|"delete", "ts": ISO-8601 or epoch ms, "seq": n, '
        '<key and row fields>} or {"op", "ts", "seq", "row": {...}}. The whole file is one batch: '
        "a bad line rejects it and changes nothing.",
    )
    _target(a)
    a.add_argument("file", metavar="FILE.jsonl", help="JSON-lines changes; '-' reads stdin")
    a.add_argument("--key", action="append", metavar="FIELD",
                   help="key field (repeat for a composite key); default: the collection's stored key, else 'id'")
    a.add_argument("--buckets", type=int, default=None, help="bucket(N, key) partitions for a new collection (default 16)")
    a.add_argument("--json", action="store_true", help="print the result as JSON")
    a.set_defaults(handler=cmd_apply)

    s = cdc.add_parser("snapshot", help="tag the state at the end of a day as snapshot-YYYY-MM-DD (optionally export Parquet)")
    _target(s)
    s.add_argument("--date", default=None, help="UTC day YYYY-MM-DD (default: today)")
    s.add_argument("--export", action="store_true", help="also write {warehouse}/{ns}/{collection}/snapshots/{date}.parquet")
    s.add_argument("--retention-days", type=int, default=None, help="tag max age in days (default: kept forever)")
    s.set_defaults(handler=cmd_snapshot)

    sh = cdc.add_parser("show", help="print the current state, or the state as of a time or tag")
    _target(sh)
    sh.add_argument("--as-of", metavar="TS", default=None, help="ISO-8601 time or epoch ms (Iceberg time travel)")
    sh.add_argument("--at", metavar="TS", default=None,
                    help="event time: the fold of every logged change with ts <= TS (includes late arrivals)")
    sh.add_argument("--tag", default=None, help="a tag such as snapshot-2026-01-30")
    sh.add_argument("--limit", type=int, default=50, help="rows to print (default 50; 0 = all)")
    sh.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    sh.set_defaults(handler=cmd_show)

    c = cdc.add_parser("changes", help="print the change log between two times (by change ts)")
    _target(c)
    c.add_argument("--since", default=None, help="from this ts (inclusive)")
    c.add_argument("--until", default=None, help="to this ts (exclusive)")
    c.add_argument("--limit", type=int, default=50, help="rows to print (default 50; 0 = all)")
    c.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    c.set_defaults(handler=cmd_changes)

    r = cdc.add_parser("repair", help="fold any part of the log the state has not folded (after a crash)")
    _target(r)
    r.set_defaults(handler=cmd_repair)


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("namespace", metavar="NAMESPACE", help="namespace (not 'events' or 'catalog')")
    p.add_argument("collection", metavar="COLLECTION", help="collection name")


def cmd_apply(args: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.cdc.changes import input_ids
    from icebergdo.jsonl import read_records

    # The change ids derive from the input's content hash and line, so applying the same input
    # again (after a crash, or by mistake) logs nothing twice: already-logged ids are skipped.
    changes, labels, digest = read_records(args.file)
    coll = ctx.lh.collection(args.namespace, args.collection, key=args.key, buckets=args.buckets)
    res = coll.apply(changes, labels=labels, _ids=input_ids(digest, len(changes)), skip_logged=True)
    out = {
        "collection": coll.state_name,
        "changes": res.changes,
        "already_logged": len(changes) - res.changes,
        "folded": res.folded,
        "log_snapshot_id": res.log_snapshot_id,
        "state_snapshot_id": res.state_snapshot_id,
        "files_rewritten": res.files_rewritten,
        "files_added": res.files_added,
    }
    if args.json:
        print(json.dumps(out))
    else:
        skipped = len(changes) - res.changes
        print(f"{coll.state_name}: applied {res.changes} change(s)"
              + (f" ({skipped} already in the log from an earlier run)" if skipped else "")
              + f"; folded {res.folded} log row(s); "
              f"files rewritten {res.files_rewritten}, added {res.files_added}; state snapshot {res.state_snapshot_id}")
    return 0


def cmd_snapshot(args: argparse.Namespace, ctx: Any) -> int:
    coll = ctx.lh.collection(args.namespace, args.collection)
    out = coll.snapshot(args.date, export=args.export, retention_days=args.retention_days)
    print(f"{coll.state_name}: tag {out['tag']} → snapshot {out['snapshot_id']} ({out['rows']} rows)")
    if "path" in out:
        print(f"exported {out['path']}")
    return 0


def _print(table: Any, limit: int, as_json: bool) -> None:
    from icebergdo.cli.core import print_table

    rows = table.to_pylist()
    total = len(rows)
    if limit:
        rows = rows[:limit]
    if as_json:
        for r in rows:
            print(json.dumps(r, default=_json_default, ensure_ascii=False))
        return
    print_table(table.column_names, [[r[c] for c in table.column_names] for r in rows])
    if total > len(rows):
        print(f"(showing {len(rows)} of {total}; --limit 0 for all)")


def _json_default(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    return str(v)


def cmd_show(args: argparse.Namespace, ctx: Any) -> int:
    coll = ctx.lh.collection(args.namespace, args.collection)
    if sum(x is not None for x in (args.as_of, args.at, args.tag)) > 1:
        raise BadInputError("give at most one of --as-of, --at, --tag")
    if args.as_of:
        table = coll.as_of(args.as_of)
    elif args.at:
        table = coll.state_at(args.at)
    else:
        table = coll.read(args.tag)
    if table.num_columns and coll.key[0] in table.column_names:
        table = table.sort_by([(k, "ascending") for k in coll.key])
    _print(table, args.limit, args.json)
    return 0


def cmd_changes(args: argparse.Namespace, ctx: Any) -> int:
    coll = ctx.lh.collection(args.namespace, args.collection)
    _print(coll.changes(args.since, args.until), args.limit, args.json)
    return 0


def cmd_repair(args: argparse.Namespace, ctx: Any) -> int:
    coll = ctx.lh.collection(args.namespace, args.collection)
    res = coll.repair()
    print(f"{coll.state_name}: folded {res.folded} log row(s) that the state was missing")
    return 0
