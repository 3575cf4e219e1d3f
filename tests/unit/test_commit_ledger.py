"""The exactly-once ledger's arithmetic and the upkeep's expiry cut-off: pure functions, no servers."""

from __future__ import annotations

import pytest

from icebergdo import ledger
from icebergdo.upkeep import PROTECT_MARGIN_MS, expiry_cutoff_ms

W1 = "01JW0000000000000000000001"
W2 = "01JW0000000000000000000002"


def test_key_encode_decode_round_trip() -> None:
    assert ledger.key(W1) == "icebergdo.ledger." + W1
    assert ledger.decode(ledger.encode(42, 1_767_225_600_000)) == (42, 1_767_225_600_000)
    assert ledger.decode("7") == (7, None)  # written by hand: no time
    for bad in ("", "x", "-3", "4@", "4@x", "1.5"):
        assert ledger.decode(bad) is None, bad
    with pytest.raises(ValueError, match="not a ULID"):
        ledger.key("writer-1")
    with pytest.raises(ValueError, match="start at 1"):
        ledger.encode(0, 1)


def test_committed_upto_and_is_committed() -> None:
    props = {ledger.key(W1): "5@1000", "icebergdo.ledger.not-a-writer": "9@1", "other": "x", ledger.key(W2): "garbage"}
    assert ledger.committed_upto(props, W1) == 5
    assert ledger.committed_upto(props, W2) is None  # malformed: unknown, so ask the history
    assert ledger.is_committed(props, W1, 5) is True
    assert ledger.is_committed(props, W1, 6) is False
    assert ledger.is_committed(props, W2, 1) is None
    assert [(e.writer_id, e.seq, e.at_ms) for e in ledger.entries(props)] == [(W1, 5, 1000)]


def test_next_seq_is_above_everything_committed_or_pending() -> None:
    assert ledger.next_seq(None, []) == 1
    assert ledger.next_seq(7, []) == 8
    assert ledger.next_seq(7, [8, 9]) == 10
    assert ledger.next_seq(None, [3]) == 4  # entry pruned, batches still in the log
    assert ledger.next_seq(12, [3]) == 13


def test_stale_entries_are_the_old_timed_ones_only() -> None:
    day = 86_400_000
    now = 100 * day
    props = {ledger.key(W1): f"3@{now - 31 * day}", ledger.key(W2): f"4@{now - 29 * day}",
             "icebergdo.ledger.01JW0000000000000000000003": "5"}  # no time: never pruned
    assert ledger.stale(props, now, 30 * day) == [ledger.key(W1)]
    assert ledger.stale(props, now, 30 * day, keep={W1}) == []
    assert ledger.stale(props, now, 28 * day) == sorted([ledger.key(W1), ledger.key(W2)])


def test_expiry_cutoff_by_age_count_and_protection() -> None:
    now = 1_000_000
    snaps = [now - 1000 * i for i in range(100)]  # one a second, newest first
    # age only: everything older than 10 s
    assert expiry_cutoff_ms(snaps, now, max_age_ms=10_000, max_count=0) == now - 10_000
    # the cap binds: keep the newest 20 (the 20th newest is 19 s old; older ones go)
    assert expiry_cutoff_ms(snaps, now, max_age_ms=3_600_000, max_count=20) == now - 19_000
    kept = [s for s in snaps if s >= expiry_cutoff_ms(snaps, now, max_age_ms=3_600_000, max_count=20)]
    assert len(kept) == 20
    # fewer snapshots than the cap: only age counts
    assert expiry_cutoff_ms(snaps[:5], now, max_age_ms=3_600_000, max_count=20) == now - 3_600_000
    # a protected snapshot (CDC events waiting) and everything after it stay, with a margin
    protected = now - 50_000
    assert expiry_cutoff_ms(snaps, now, max_age_ms=10_000, max_count=20, protect_ms=protected) == protected - PROTECT_MARGIN_MS
