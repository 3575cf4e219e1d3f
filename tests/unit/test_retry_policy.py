"""`icebergdo.commit.RetryPolicy`: our attempts above pyiceberg's, with full-jitter exponential backoff."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icebergdo.commit import ATTEMPTS_PROPERTY, BASE_DELAY_PROPERTY, MAX_DELAY_PROPERTY, RetryPolicy


def test_defaults() -> None:
    assert RetryPolicy() == RetryPolicy.from_properties({}) == RetryPolicy(attempts=3, base_delay_s=0.25, max_delay_s=4.0)


def test_from_table_properties() -> None:
    p = RetryPolicy.from_properties({ATTEMPTS_PROPERTY: "7", BASE_DELAY_PROPERTY: "100", MAX_DELAY_PROPERTY: "1500", "other": "x"})
    assert p == RetryPolicy(attempts=7, base_delay_s=0.1, max_delay_s=1.5)


def test_out_of_range_values_are_clamped() -> None:
    assert RetryPolicy.from_properties({ATTEMPTS_PROPERTY: "0", BASE_DELAY_PROPERTY: "-5", MAX_DELAY_PROPERTY: "-1"}) == RetryPolicy(1, 0.0, 0.0)


@pytest.mark.parametrize("props", [{ATTEMPTS_PROPERTY: "three"}, {BASE_DELAY_PROPERTY: "0.5"}, {MAX_DELAY_PROPERTY: ""}])
def test_malformed_values_fall_back_to_the_defaults_with_a_warning(props: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    assert RetryPolicy.from_properties(props) == RetryPolicy()
    assert "malformed icebergdo.commit.* table properties" in caplog.text


@given(st.integers(1, 40), st.floats(0, 5), st.floats(0, 60), st.integers(0, 2**32))
def test_delay_is_within_the_capped_exponential_window(retry: int, base: float, cap: float, seed: int) -> None:
    random.seed(seed)
    d = RetryPolicy(attempts=3, base_delay_s=base, max_delay_s=cap).delay(retry)
    assert 0 <= d <= min(cap, base * 2 ** (retry - 1)) + 1e-12


def test_delay_is_jittered_over_the_whole_window() -> None:
    """Full jitter: samples spread over [0, window], so writers that collided do not collide again in step."""
    p = RetryPolicy(base_delay_s=0.25, max_delay_s=4.0)
    rng_state = random.getstate()
    try:
        random.seed(1)
        for retry, window in ((1, 0.25), (2, 0.5), (3, 1.0), (5, 4.0), (9, 4.0)):
            samples = [p.delay(retry) for _ in range(2000)]
            assert max(samples) <= window
            assert min(samples) < window * 0.05 and max(samples) > window * 0.95  # both ends reached
            assert 0.4 * window < sum(samples) / len(samples) < 0.6 * window  # uniform: mean near the middle
    finally:
        random.setstate(rng_state)
