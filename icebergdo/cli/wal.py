"""`icebergdo wal list|retry|drop`: look at write-ahead logs, and at the batches set aside as dead letters.

A batch that can never commit (it does not fit the table's schema, e.g. a WAL written by
`ingest --unknown keep` replayed by a writer that does not add columns) is moved to the
`rejected/` folder of its WAL instead of blocking every later batch. `list` shows pending and
rejected batches with the reason, `retry` puts rejected batches back and commits them (after
the cause is fixed, or with `--unknown keep` to add their new columns), `drop` deletes them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from icebergdo.cli import args as args_mod
from icebergdo.errors import BusyError, IcebergdoError, NotFoundError

# `wal list`: one row per batch (state pending or rejected); a folder without batches is one "empty" row.
LIST_COLUMNS = ["table", "folder", "writer_id", "in_use", "state", "batch_id", "seq", "events", "bytes", "age_s", "reason"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("wal", help="write-ahead logs: list pending and rejected batches, retry or drop rejected ones",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    wsub = p.add_subparsers(dest="wal_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--table", help="only this table's WAL folders (default: every table)")
        q.add_argument("--wal", metavar="DIR", help="a WAL folder, or a folder of WAL folders (default: the lakehouse's)")

    q = wsub.add_parser("list", help="WAL folders with their pending and rejected (dead-letter) batches, one row per batch")
    common(q)
    args_mod.add_format(q)
    q.set_defaults(handler=cmd_list)

    q = wsub.add_parser("retry", help="put rejected batches back in their WAL and commit them")
    common(q)
    q.add_argument("batches", nargs="*", metavar="BATCH", help="batch ids (from `wal list`)")
    q.add_argument("--all", action="store_true", help="every rejected batch")
    q.add_argument("--unknown", choices=("error", "keep"), default="error",
                   help="columns the table lacks: error (default) or keep (add them to the table)")
    q.set_defaults(handler=cmd_retry)

    q = wsub.add_parser("drop", help="delete rejected batches for good")
    common(q)
    q.add_argument("batches", nargs="*", metavar="BATCH", help="batch ids (from `wal list`)")
    q.add_argument("--all", action="store_true", help="every rejected batch")
    q.set_defaults(handler=cmd_drop)


def _folders(args: argparse.Namespace, ctx: Any) -> list[tuple[str | None, Path]]:
    """(table, folder) of every WAL folder in scope."""
    from icebergdo import wal
    from icebergdo.writer import wal_root

    if args.wal:
        base = Path(args.wal).expanduser().resolve()
        if (base / wal.WRITER_ID_FILE).exists():
            folders = [base]
        else:
            folders = wal.writer_folders(base) or [f for sub in sorted(base.iterdir()) if sub.is_dir() for f in wal.writer_folders(sub)]
    else:
        root = wal_root(ctx.config)
        roots = [root / args.table] if args.table else (sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])
        folders = [f for r in roots for f in wal.writer_folders(r)]
    out = []
    for folder in folders:
        try:
            table = (folder / wal.TABLE_FILE).read_text().strip() or None
        except FileNotFoundError:
            table = folder.name if folder.parent.name == "wal" else folder.parent.name
        if args.table and table != args.table:
            continue
        out.append((table, folder))
    return out


def _rows(table: str | None, folder: Path) -> list[dict[str, Any]]:
    from icebergdo import wal

    try:
        writer_id = (folder / wal.WRITER_ID_FILE).read_text().strip() or None
    except FileNotFoundError:
        writer_id = None
    base = {"table": table, "folder": str(folder), "writer_id": writer_id, "in_use": wal.is_in_use(folder)}
    rows = []
    for seq, batch_id, parts in wal.group_segments([p.name for p in folder.iterdir()]):
        paths = [folder / name for _, name in parts]
        events = sum(t.num_rows for p in paths if (t := wal.read_segment(p)) is not None)
        rows.append({**base, "state": "pending", "batch_id": batch_id, "seq": seq, "events": events,
                     "bytes": sum(p.stat().st_size for p in paths), "age_s": round(max(wal.age_s(p) for p in paths), 1), "reason": None})
    for r in wal.rejected_batches(folder):
        rows.append({**base, "state": "rejected", "batch_id": r.batch_id, "seq": r.seq, "events": r.rows,
                     "bytes": sum(p.stat().st_size for p in r.paths if p.exists()),
                     "age_s": round(max((wal.age_s(p) for p in r.paths), default=0.0), 1), "reason": r.reason})
    return rows or [{**base, "state": "empty"}]


def cmd_list(args: argparse.Namespace, ctx: Any) -> int:
    from icebergdo.cli import output

    rows = [row for table, folder in _folders(args, ctx) for row in _rows(table, folder)]
    cols = [output.Column(c, output.BYTES) if c == "bytes" else output.Column(c, output.SECONDS) if c == "age_s"
            else output.Column(c, output.NUMBER) if c == "events" else c for c in LIST_COLUMNS]
    rejected = sum(1 for r in rows if r.get("state") == "rejected")
    footer = (f"{rejected} rejected batch(es): `icebergdo wal retry BATCH` (after fixing the cause, or with --unknown keep), "
              "or `icebergdo wal drop BATCH`") if rejected else None
    output.emit_dicts(cols, rows, args.format, empty="no write-ahead-log folders", footer=footer)
    return 0


def _select(args: argparse.Namespace, ctx: Any) -> list[tuple[str | None, Any]]:
    from icebergdo import wal

    if not args.batches and not args.all:
        raise IcebergdoError("name the batch id(s) to act on (see `icebergdo wal list`), or give --all")
    chosen = []
    for table, folder in _folders(args, ctx):
        for r in wal.rejected_batches(folder):
            if args.all or r.batch_id in args.batches:
                chosen.append((table, r))
    missing = set(args.batches) - {r.batch_id for _, r in chosen}
    if missing:
        raise NotFoundError(f"no rejected batch {', '.join(sorted(missing))} (see `icebergdo wal list`)")
    return chosen


def cmd_retry(args: argparse.Namespace, ctx: Any) -> int:
    from icebergdo import ledger, wal
    from icebergdo.errors import RejectedBatchError

    chosen = _select(args, ctx)
    by_folder: dict[Path, tuple[str, list[Any]]] = {}
    for table, r in chosen:
        if table is None:
            raise IcebergdoError(f"{r.folder}: cannot tell which table its batches belong to (no 'table' file)")
        by_folder.setdefault(r.folder, (table, []))[1].append(r)
    failed = 0
    for folder, (table, batches) in by_folder.items():
        log = wal.try_open(folder, table)
        if log is None:
            raise BusyError(f"{folder} is in use by a running writer; retry once it has stopped")
        try:
            props = ctx.lh.table(table).metadata.properties
            pending = [b.seq for b in log.leftovers() if b.seq is not None]
            seq = ledger.next_seq(ledger.committed_upto(props, log.writer_id), pending)
            for r in batches:
                log.requeue(r, seq)
                seq += 1
        finally:
            log.close()
        writer = ctx.lh.writer(table, wal_dir=folder, unknown=args.unknown)
        try:
            writer.close()
        except RejectedBatchError as e:
            failed += 1
            print(f"icebergdo: {e}", file=sys.stderr)
        st = writer.stats()
        print(f"{folder}: {st.commits} batch(es) committed, {st.skipped_batches} already committed, {st.rejected_batches} rejected again")
    return 3 if failed else 0


def cmd_drop(args: argparse.Namespace, ctx: Any) -> int:
    from icebergdo import wal

    for _table, r in _select(args, ctx):
        wal.drop_rejected(r)
        print(f"dropped {r.batch_id} ({r.rows} events) from {r.folder}")
    return 0
