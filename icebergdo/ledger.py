"""The exactly-once ledger: "writer W has committed every batch up to sequence N", one table property per writer.

Why a ledger and not the snapshot history: a durable writer replays its write-ahead log after a
crash and must skip the batches that had already landed. Looking their batch ids up in the
snapshot summaries only works while those snapshots are kept, so exactly-once and snapshot
expiry pulled in opposite directions. The ledger lives in the table properties instead, which
expiry never touches, and costs O(1) to consult.

The invariants that make one number per writer enough:

- every durable writer (one write-ahead-log folder, one writer id) numbers its batches 1, 2, 3…
  and commits them strictly in that order, one Iceberg commit per batch;
- the commit that appends batch N sets `icebergdo.ledger.<writer id>` = `N@<commit time ms>` in
  the same metadata update as the snapshot, so both land or neither does;
- that commit carries a guard (`icebergdo.iceberg.datafiles.LedgerGuard`) checked against the
  metadata it is applied to: it is refused if the ledger already covers N, so a batch can never
  land twice, whatever retries or late-landing attempts happen underneath;
- a batch that can never commit leaves the log (dead-letter) before any later batch commits, so
  "up to N" never hides a batch that is still waiting.

Only the writer that owns the folder writes its key (the folder is locked), so the lost-update
semantics of table properties (they are re-applied on top of the newest metadata) are what we
want. Entries of writers that are gone are pruned after a long window (`prune`); a writer whose
entry was pruned falls back to the snapshot-summary lookup of its batch ids.

Pure functions only (no pyiceberg): unit-tested in tests/unit/test_commit_ledger.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

LEDGER_PREFIX = "icebergdo.ledger."
# Writer ids are ULIDs: other keys under the prefix are never mistaken for ledger entries.
_WRITER_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_VALUE = re.compile(r"^(?P<seq>\d+)(?:@(?P<at>\d+))?$")


@dataclass(frozen=True)
class Entry:
    """One writer's ledger entry: the highest committed sequence, and when it was committed (ms)."""

    writer_id: str
    seq: int
    at_ms: int | None


def is_writer_id(writer_id: str) -> bool:
    return bool(_WRITER_ID.match(writer_id))


def key(writer_id: str) -> str:
    """The table property holding `writer_id`'s entry."""
    if not is_writer_id(writer_id):
        raise ValueError(f"ledger: writer id {writer_id!r} is not a ULID")
    return LEDGER_PREFIX + writer_id


def encode(seq: int, at_ms: int) -> str:
    if seq < 1:
        raise ValueError(f"ledger: sequence numbers start at 1, got {seq}")
    return f"{seq}@{at_ms}"


def decode(value: str) -> tuple[int, int | None] | None:
    """`"42@1767225600000"` → (42, 1767225600000); a bare `"42"` has no time; None if malformed."""
    m = _VALUE.match(value.strip())
    if not m:
        return None
    return int(m["seq"]), int(m["at"]) if m["at"] is not None else None


def entries(properties: Mapping[str, str]) -> list[Entry]:
    """Every well-formed ledger entry among a table's properties."""
    out = []
    for k, v in properties.items():
        if not k.startswith(LEDGER_PREFIX):
            continue
        wid = k[len(LEDGER_PREFIX):]
        parsed = decode(v) if is_writer_id(wid) else None
        if parsed is not None:
            out.append(Entry(wid, parsed[0], parsed[1]))
    return out


def committed_upto(properties: Mapping[str, str], writer_id: str) -> int | None:
    """The highest sequence `writer_id` committed, or None when the table has no (readable) entry for it."""
    value = properties.get(LEDGER_PREFIX + writer_id)
    parsed = decode(value) if value is not None else None
    return parsed[0] if parsed is not None else None


def is_committed(properties: Mapping[str, str], writer_id: str, seq: int) -> bool | None:
    """True/False when the ledger knows; None when it has no entry for the writer (ask the history)."""
    upto = committed_upto(properties, writer_id)
    return None if upto is None else seq <= upto


def next_seq(committed: int | None, pending: list[int]) -> int:
    """The first sequence number a writer may give a new batch: above everything committed or still in its log."""
    return max([committed or 0, *pending]) + 1


def stale(properties: Mapping[str, str], now_ms: int, max_age_ms: int, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Keys of entries last written more than `max_age_ms` ago (writers that are gone), except `keep`.

    An entry without a time is never stale: it was not written by this module.
    """
    return sorted(
        LEDGER_PREFIX + e.writer_id
        for e in entries(properties)
        if e.at_ms is not None and now_ms - e.at_ms > max_age_ms and e.writer_id not in keep
    )
