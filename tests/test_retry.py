"""The retry policy on its own: waits, backoff and deadlines with an injected clock."""

from __future__ import annotations

import asyncio
import email.utils

from shared.retry import (
    ATTEMPT_TIMEOUT_CAP_SECONDS,
    BACKOFF_CAP_SECONDS,
    Deadline,
    WritePacer,
    backoff,
    fits,
    parse_retry_after,
    plan_wait,
)
from tests.fakes import FakeClock

NOW = 1_800_000_000.0


def test_retry_after_in_whole_and_fractional_seconds() -> None:
    assert parse_retry_after("7", NOW) == 7.0
    assert parse_retry_after("2.128", NOW) == 2.128


def test_retry_after_as_http_date() -> None:
    date = email.utils.formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after(date, NOW) == 30.0


def test_retry_after_in_the_past_means_now() -> None:
    assert parse_retry_after(email.utils.formatdate(NOW - 30, usegmt=True), NOW) == 0.0
    assert parse_retry_after("-3", NOW) == 0.0


def test_unreadable_retry_after_is_ignored() -> None:
    for value in (None, "", "soon", "nan", "inf", "Mon, 99 Foo"):
        assert parse_retry_after(value, NOW) is None


def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    assert [backoff(n, lambda: 0.0) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert [backoff(n, lambda: 1.0) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff(30, lambda: 1.0) == BACKOFF_CAP_SECONDS


def test_graph_retry_after_wins_over_backoff() -> None:
    assert plan_wait(1, 3.5, lambda: 1.0) == 3.5
    assert plan_wait(1, None, lambda: 1.0) == 0.5


def test_retry_after_zero_still_backs_off() -> None:
    assert plan_wait(1, 0.0, lambda: 0.0) == 0.25
    assert plan_wait(3, 0.0, lambda: 0.0) == 1.0


def test_a_wait_that_leaves_no_time_for_an_attempt_does_not_fit() -> None:
    assert fits(1.0, 5.0)
    assert not fits(5.0, 5.0)
    assert not fits(4.9, 5.0)


def test_deadline_counts_down_with_the_injected_clock() -> None:
    now = [100.0]
    deadline = Deadline.after(20, lambda: now[0])
    assert deadline.remaining() == 20
    assert deadline.attempt_timeout() == ATTEMPT_TIMEOUT_CAP_SECONDS
    now[0] += 15
    assert deadline.remaining() == 5
    assert deadline.attempt_timeout() == 5
    now[0] += 60
    assert deadline.remaining() == 0


def test_write_pacer_spaces_writes_to_the_limit_per_window() -> None:
    clock = FakeClock()
    pacer = WritePacer(3, 10.0, clock, clock.sleep)

    async def go() -> list[float | None]:
        deadline = Deadline.after(100, clock)
        return [await pacer.acquire(deadline) for _ in range(7)]

    assert asyncio.run(go()) == [None] * 7
    assert clock.sleeps == [10.0, 10.0]  # slots 4 and 7 waited for the window to move on


def test_write_pacer_will_not_wait_past_the_deadline() -> None:
    clock = FakeClock()
    pacer = WritePacer(1, 20.0, clock, clock.sleep)

    async def go() -> list[float | None]:
        deadline = Deadline.after(5, clock)
        return [await pacer.acquire(deadline), await pacer.acquire(deadline)]

    assert asyncio.run(go()) == [None, 20.0]
    assert clock.sleeps == []
