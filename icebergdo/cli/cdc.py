"""`icebergdo cdc`: apply change files to a collection, tag point-in-time snapshots, show state and history."""

from __future__ import annotations

import argparse
from typing import Any

from icebergdo.cli import COMMANDS, args, output
from icebergdo.cli.output import JSON, TEXT, Column
from icebergdo.errors import BadInputError, NotFoundError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cdc",
        help=COMMANDS["cdc"][1],
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
    a.add_argument("--buckets", type=args.count(minimum=1), default=None, help="bucket(N, key) partitions for a new collection (default 16)")
    args.add_format(a)
    a.set_defaults(handler=cmd_apply)

    s = cdc.add_parser("snapshot", help="tag the state at the end of a day as snapshot-YYYY-MM-DD (optionally export Parquet)")
    _target(s)
    s.add_argument("--date", default=None, help="UTC day YYYY-MM-DD (default: today)")
    s.add_argument("--export", action="store_true", help="also write {warehouse}/{ns}/{collection}/snapshots/{date}.parquet")
    s.add_argument("--retention-days", type=args.count(minimum=1), default=None, help="tag max age in days (default: kept forever)")
    args.add_format(s)
    s.set_defaults(handler=cmd_snapshot)

    sh = cdc.add_parser("show", help="print the current state, or the state as of a time or tag")
    _target(sh)
    sh.add_argument("--as-of", metavar="TS", default=None, help="ISO-8601 time or epoch ms (Iceberg time travel)")
    sh.add_argument("--at", metavar="TS", default=None,
                    help="event time: the fold of every logged change with ts <= TS (includes late arrivals)")
    sh.add_argument("--tag", default=None, help="a tag such as snapshot-2026-01-30")
    args.add_limit(sh, default=50)
    args.add_format(sh)
    sh.set_defaults(handler=cmd_show)

    c = cdc.add_parser("changes", help="print the change log between two times (by change ts)")
    _target(c)
    c.add_argument("--since", default=None, help="from this ts (inclusive)")
    c.add_argument("--until", default=None, help="to this ts (exclusive)")
    args.add_limit(c, default=50)
    args.add_format(c)
    c.set_defaults(handler=cmd_changes)

    r = cdc.add_parser("repair", help="fold any part of the log the state has not folded (after a crash)")
    _target(r)
    args.add_format(r)
    r.set_defaults(handler=cmd_repair)


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("namespace", metavar="NAMESPACE", help="namespace (not 'events' or 'catalog')")
    p.add_argument("collection", metavar="COLLECTION", help="collection name")


def cmd_apply(args: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.cdc.changes import input_ids
    from icebergdo.jsonl import read_records

    # One JSONL reader for ingest and cdc apply (line messages, gzip/zstd, stdin). The change ids derive
    # from the input's content hash and line, so applying the same input again (after a crash, or by
    # mistake) logs nothing twice: ids already in the log are skipped.
    changes, labels, digest = read_records(args.file)
    coll = ctx.lh.collection(args.namespace, args.collection, key=args.key, buckets=args.buckets)
    res = coll.apply(changes, labels=labels, _ids=input_ids(digest, len(changes)), skip_logged=True)
    skipped = len(changes) - res.changes
    out = {
        "collection": coll.state_name,
        "changes": res.changes,
        "already_logged": skipped,
        "folded": res.folded,
        "log_snapshot_id": res.log_snapshot_id,
        "state_snapshot_id": res.state_snapshot_id,
        "files_rewritten": res.files_rewritten,
        "files_added": res.files_added,
    }
    output.emit_record(out, args.format, f"{coll.state_name}: applied {res.changes} change(s)"
                       + (f" ({skipped} already in the log from an earlier run)" if skipped else "")
                       + f"; folded {res.folded} log row(s); "
                       f"files rewritten {res.files_rewritten}, added {res.files_added}; state snapshot {res.state_snapshot_id}")
    return 0


def _existing(a: argparse.Namespace, ctx: Any) -> Any:
    """The collection, which must exist: reading or tagging a missing one is an error (exit 7), not an empty table."""
    coll = ctx.lh.collection(a.namespace, a.collection)
    if coll.state is None and coll.log is None:
        raise NotFoundError(f"no collection {a.namespace}/{a.collection} (no table {coll.state_name}; "
                            f"`icebergdo cdc apply {a.namespace} {a.collection} FILE` creates it)")
    return coll


def cmd_snapshot(a: argparse.Namespace, ctx: Any) -> int:
    coll = _existing(a, ctx)
    out = coll.snapshot(a.date, export=a.export, retention_days=a.retention_days)
    record = {"collection": coll.state_name, "tag": out["tag"], "snapshot_id": out["snapshot_id"], "rows": out["rows"], "path": out.get("path")}
    text = f"{coll.state_name}: tag {out['tag']} → snapshot {out['snapshot_id']} ({out['rows']} rows)"
    if "path" in out:
        text += f"\nexported {out['path']}"
    output.emit_record(record, a.format, text)
    return 0


def _print(table: Any, a: argparse.Namespace) -> None:
    """Rows of an Arrow table in `--format`, at most `--limit` of them."""
    total = table.num_rows
    if a.limit:
        table = table.slice(0, a.limit)
    names = table.column_names
    footer = f"(showing {table.num_rows:,} of {total:,}; --limit 0 for all)" if total > table.num_rows else None
    spec = [Column(n, JSON if n in output.JSON_COLUMNS else TEXT) for n in names]
    output.emit(spec, ([r[n] for n in names] for r in table.to_pylist()), a.format, footer=footer)


def cmd_show(a: argparse.Namespace, ctx: Any) -> int:
    coll = _existing(a, ctx)
    if sum(x is not None for x in (a.as_of, a.at, a.tag)) > 1:
        raise BadInputError("give at most one of --as-of, --at, --tag")
    if a.as_of:
        table = coll.as_of(a.as_of)
    elif a.at:
        table = coll.state_at(a.at)
    else:
        table = coll.read(a.tag)
    if table.num_columns and coll.key[0] in table.column_names:
        table = table.sort_by([(k, "ascending") for k in coll.key])
    _print(table, a)
    return 0


def cmd_changes(a: argparse.Namespace, ctx: Any) -> int:
    coll = _existing(a, ctx)
    _print(coll.changes(a.since, a.until), a)
    return 0


def cmd_repair(a: argparse.Namespace, ctx: Any) -> int:
    coll = _existing(a, ctx)
    res = coll.repair()
    output.emit_record({"collection": coll.state_name, "folded": res.folded}, a.format,
                       f"{coll.state_name}: folded {res.folded} log row(s) that the state was missing")
    return 0
