"""The retry policy on its own: waits, backoff and deadlines with an injected clock."""

from __future__ import annotations

import asyncio
import email.utils

from shared.retry import (
    ATTEMPT_TIMEOUT_CAP_SECONDS,
    BACKOFF_CAP_SECONDS,
    MAX_WAIT_SECONDS,
    Deadline,
    PaceWait,
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


def test_a_hostile_retry_after_is_capped_at_five_minutes() -> None:
    assert parse_retry_after("86400", NOW) == MAX_WAIT_SECONDS
    assert parse_retry_after("1e308", NOW) == MAX_WAIT_SECONDS
    assert parse_retry_after(email.utils.formatdate(NOW + 86400, usegmt=True), NOW) == 300.0
    assert parse_retry_after("299.5", NOW) == 299.5  # below the cap: as Graph asked


def test_non_finite_retry_after_counts_as_absent() -> None:
    for value in ("inf", "-inf", "nan", "1e999", "Infinity"):
        assert parse_retry_after(value, NOW) is None


def test_a_hold_longer_than_the_cap_is_held_for_the_cap() -> None:
    clock = FakeClock(now=0.0)
    pacer = WritePacer(100, 20.0, clock, clock.sleep)
    pacer.hold(86400.0)
    assert pacer.wait_needed() == MAX_WAIT_SECONDS


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


async def _writes(pacer: WritePacer, clock: FakeClock, count: int, takes: float) -> list[float]:
    """`count` writes one after another, each answered `takes` seconds after it is sent."""
    deadline = Deadline.after(1000, clock)
    sent_at = []
    for _ in range(count):
        waits_before = len(clock.sleeps)
        assert await pacer.acquire(deadline) is (len(clock.sleeps) > waits_before)
        sent_at.append(clock.now)
        clock.now += takes
        pacer.sent()
    return sent_at


def test_write_pacer_spaces_writes_to_the_limit_per_window() -> None:
    clock = FakeClock(now=0.0)
    pacer = WritePacer(3, 10.0, clock, clock.sleep)
    sent_at = asyncio.run(_writes(pacer, clock, 7, takes=0.0))
    assert sent_at == [0.0, 0.0, 0.0, 10.0, 10.0, 10.0, 20.0]
    assert clock.sleeps == [10.0, 10.0]  # writes 4 and 7 waited for the window to move on


def test_write_pacer_counts_the_window_from_the_answer_not_the_send() -> None:
    # Intune counts a write when it arrives, somewhere between our send and its answer: a place
    # comes free one window after the answer, so a slow write can never be counted twice.
    clock = FakeClock(now=0.0)
    pacer = WritePacer(2, 10.0, clock, clock.sleep)
    sent_at = asyncio.run(_writes(pacer, clock, 4, takes=3.0))
    assert sent_at == [0.0, 3.0, 13.0, 16.0]  # counted from the send: [0, 3, 10, 13]
    assert clock.sleeps == [7.0]


def test_write_pacer_keeps_the_place_of_a_write_still_in_flight() -> None:
    clock = FakeClock(now=0.0)
    pacer = WritePacer(1, 10.0, clock, clock.sleep)

    async def go() -> None:
        assert await pacer.acquire(Deadline.after(100, clock)) is False
        # Not answered yet: whenever it is, its place frees a whole window later at the soonest.
        assert pacer.wait_needed() == 10.0
        clock.now += 4.0
        pacer.sent()
        assert pacer.wait_needed() == 10.0
        clock.now += 10.0
        assert pacer.wait_needed() == 0.0

    asyncio.run(go())


def test_write_pacer_gives_back_a_place_nothing_was_sent_on_at_once() -> None:
    clock = FakeClock(now=0.0)
    pacer = WritePacer(1, 10.0, clock, clock.sleep)

    async def go() -> None:
        assert await pacer.acquire(Deadline.after(100, clock)) is False
        pacer.unsent()
        assert pacer.wait_needed() == 0.0
        # Positive control: the same place, sent, is kept for the window.
        assert await pacer.acquire(Deadline.after(100, clock)) is False
        pacer.sent()
        assert pacer.wait_needed() == 10.0

    asyncio.run(go())


def test_write_pacer_holds_every_write_after_a_throttled_one() -> None:
    clock = FakeClock(now=0.0)
    pacer = WritePacer(100, 20.0, clock, clock.sleep)
    assert pacer.wait_needed() == 0.0
    pacer.hold(4.0)
    pacer.hold(1.0)  # a shorter hold never shortens a longer one
    assert pacer.wait_needed() == 4.0
    sent_at = asyncio.run(_writes(pacer, clock, 2, takes=0.0))
    assert sent_at == [4.0, 4.0]
    assert clock.sleeps == [4.0]


def test_write_pacer_will_not_wait_past_the_deadline() -> None:
    clock = FakeClock()
    pacer = WritePacer(1, 20.0, clock, clock.sleep)

    async def go() -> list[PaceWait | bool]:
        deadline = Deadline.after(5, clock)
        first = await pacer.acquire(deadline)
        pacer.sent()
        return [first, await pacer.acquire(deadline)]

    assert asyncio.run(go()) == [False, PaceWait(20.0, throttled=False)]
    assert clock.sleeps == []


def test_write_pacer_says_when_the_wait_is_a_hold_after_a_429() -> None:
    clock = FakeClock()
    pacer = WritePacer(100, 20.0, clock, clock.sleep)
    pacer.hold(30.0)
    wait = asyncio.run(pacer.acquire(Deadline.after(5, clock)))
    assert wait == PaceWait(30.0, throttled=True)
