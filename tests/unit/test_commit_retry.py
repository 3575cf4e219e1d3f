"""Retry policies and failure classification: which failures are retried, how long we wait, and the
process-local pause an upkeep round puts on its own process's appends."""

from __future__ import annotations

import threading
import time

import pytest
from pyiceberg.exceptions import CommitFailedException

from icebergdo import commit
from icebergdo.errors import BadInputError, NoSuchTableError, RejectedBatchError, StorageError
from icebergdo.writer import MAX_BACKOFF, MIN_BACKOFF, backoff_after


def test_retry_policy_delays_are_bounded_full_jitter() -> None:
    policy = commit.RetryPolicy(attempts=5, base_delay_s=0.25, max_delay_s=4.0)
    assert [policy.ceiling(n) for n in (1, 2, 3, 4, 5, 6, 60)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for retry in range(1, 10):
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(0 <= d <= policy.ceiling(retry) for d in delays)
        assert max(delays) > policy.ceiling(retry) / 2  # jittered over the whole range, not a constant


def test_retry_policy_from_table_properties() -> None:
    props = {commit.ATTEMPTS_PROPERTY: "7", commit.BASE_DELAY_PROPERTY: "100", commit.MAX_DELAY_PROPERTY: "900"}
    assert commit.RetryPolicy.from_properties(props) == commit.RetryPolicy(7, 0.1, 0.9)
    assert commit.RetryPolicy.from_properties({commit.ATTEMPTS_PROPERTY: "0"}).attempts == 1
    assert commit.RetryPolicy.from_properties({commit.ATTEMPTS_PROPERTY: "many"}) == commit.RetryPolicy()


def test_writer_backoff_doubles_to_a_ceiling() -> None:
    assert backoff_after(1) == MIN_BACKOFF
    assert backoff_after(2) == 2 * MIN_BACKOFF
    assert backoff_after(3) == 4 * MIN_BACKOFF
    assert backoff_after(50) == MAX_BACKOFF
    assert all(backoff_after(n) <= backoff_after(n + 1) for n in range(1, 30))


def test_permanent_failures_are_bad_input_and_missing_tables_only() -> None:
    assert commit.is_permanent(BadInputError("does not fit"))
    assert commit.is_permanent(RejectedBatchError("set aside"))
    assert commit.is_permanent(NoSuchTableError("gone"))
    for transient in (StorageError("down"), CommitFailedException("race"), OSError("reset"), TimeoutError()):
        assert not commit.is_permanent(transient), transient


def test_describe_is_never_empty() -> None:
    assert commit.describe(ValueError("bad column")) == "bad column"
    assert commit.describe(ValueError()) == "ValueError"
    assert commit.describe(KeyError("")) == "''"  # KeyError's str is its repr
    assert commit.describe(TypeError("   ")) == "TypeError"


def test_pause_makes_appends_wait_but_only_within_its_budget() -> None:
    assert commit._pauses.wait("t.unpaused") < 0.05
    waited: dict[str, float] = {}

    def appender() -> None:
        waited["s"] = commit._pauses.wait("t.paused")

    with commit.pause_commits("t.paused", max_s=30):
        t = threading.Thread(target=appender)
        t.start()
        time.sleep(0.3)
        assert t.is_alive()  # held while the round runs
    t.join(5)
    assert 0.25 <= waited["s"] < 5  # released when the round ended, long before its budget
    with commit.pause_commits("t.paused", max_s=0.3):
        started = time.monotonic()
        commit._pauses.wait("t.paused")  # the round overruns its budget: appends go ahead
        assert 0.25 <= time.monotonic() - started < 3


@pytest.mark.parametrize("n", [1, 3])
def test_ledger_guard_refuses_a_covered_batch(n: int) -> None:
    from types import SimpleNamespace

    from icebergdo import ledger
    from icebergdo.iceberg.datafiles import AlreadyCommitted, LedgerGuard

    wid = "01JW0000000000000000000001"
    guard = LedgerGuard(writer_id=wid, seq=n)
    guard.validate(SimpleNamespace(properties={}))  # type: ignore[arg-type]  # no entry: may commit
    guard.validate(SimpleNamespace(properties={ledger.key(wid): f"{n - 1}@1"}))  # type: ignore[arg-type]
    with pytest.raises(AlreadyCommitted):
        guard.validate(SimpleNamespace(properties={ledger.key(wid): f"{n}@1"}))  # type: ignore[arg-type]


def test_schema_mismatch_becomes_one_line_naming_the_fields() -> None:
    from icebergdo.iceberg.datafiles import one_line_mismatch

    table = """Mismatch in fields:
┏━━━━┳━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━┓
┃    ┃ Table field          ┃ Dataframe field      ┃
┡━━━━╇━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━┩
│ ✅ │ 1: id: required      │ 1: id: required      │
│ ❌ │ 9: n: optional       │ 9: n: optional long  │
└────┴──────────────────────┴──────────────────────┘
"""
    assert one_line_mismatch(table) == "Mismatch in fields: field '9: n: optional': the batch has '9: n: optional long'"
    assert one_line_mismatch("PyArrow table contains more columns: country.") == "PyArrow table contains more columns: country."
    assert one_line_mismatch("first\n  second\n") == "first second"
