"""The kernel's runtime kit: one backoff, one rate-limited log, one way to call user code."""

from __future__ import annotations

import random

import pytest

from meetq.core._backoff import Backoff
from meetq.core._ratelog import LogEvery

# -- Backoff -----------------------------------------------------------------------------


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.ceiling(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_attempt_below_one_is_the_base_and_huge_attempts_do_not_overflow() -> None:
    backoff = Backoff(0.1, 60.0)
    assert backoff.ceiling(0) == 0.1
    assert backoff.ceiling(-5) == 0.1
    assert backoff.ceiling(10**6) == 60.0
    assert Backoff(0.0, 5.0).ceiling(10**6) == 0.0


@pytest.mark.parametrize("jitter", [0.0, 0.2, 0.5, 1.0])
def test_backoff_jitter_only_shortens_by_at_most_its_share(jitter: float) -> None:
    backoff = Backoff(1.0, 300.0, jitter)
    rng_state = random.getstate()
    try:
        random.seed(1234)
        for attempt in range(1, 12):
            ceiling = backoff.ceiling(attempt)
            for _ in range(200):
                delay = backoff.delay(attempt)
                assert ceiling * (1.0 - jitter) <= delay <= ceiling
    finally:
        random.setstate(rng_state)


def test_backoff_jitter_spreads_the_delays() -> None:
    backoff = Backoff(1.0, 300.0, 0.5)
    assert len({backoff.delay(3) for _ in range(50)}) > 1


def test_backoff_total_ceiling_sums_the_waits() -> None:
    backoff = Backoff(1.0, 5.0, 0.2)
    assert backoff.total_ceiling(0) == 0.0
    assert backoff.total_ceiling(4) == 1.0 + 2.0 + 4.0 + 5.0


# -- LogEvery ----------------------------------------------------------------------------


def test_log_every_logs_the_first_then_counts_what_it_held_back() -> None:
    now = [1000.0]
    limiter = LogEvery(5.0, clock=lambda: now[0])
    assert limiter.tick() == 1  # the first occurrence is logged at once
    assert [limiter.tick() for _ in range(3)] == [0, 0, 0]
    now[0] += 4.9
    assert limiter.tick() == 0
    now[0] += 0.1
    assert limiter.tick() == 5  # this line stands for the four held back and itself
    assert limiter.tick() == 0


def test_log_every_first_tick_logs_even_right_after_boot() -> None:
    assert LogEvery(5.0, clock=lambda: 0.5).tick() == 1
