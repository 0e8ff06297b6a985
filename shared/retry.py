"""Retry policy within a deadline: pure functions of an injected clock and random source.

Graph tells us how long to wait (`Retry-After`: seconds, fractional seconds or an HTTP date);
when it does not, we back off exponentially with jitter. A wait that would end past the deadline
is never started: the caller gets an answer now instead of a timeout later.
"""

from __future__ import annotations

import collections
import email.utils
import math
from collections.abc import Awaitable, Callable
from typing import NamedTuple

Clock = Callable[[], float]

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 8.0
# Each attempt gets at most this long, so one hung connection cannot eat the whole deadline.
ATTEMPT_TIMEOUT_CAP_SECONDS = 10.0
# An attempt started with less time than this left would most likely time out half-way.
MIN_ATTEMPT_SECONDS = 0.25
# A write started with less time than this left could land after we told the caller it failed.
MIN_WRITE_SECONDS = 1.0
# The longest wait we take from Graph: a hostile or broken `Retry-After: 86400` must not hold
# every write of the process for a day.
MAX_WAIT_SECONDS = 300.0


class Deadline(NamedTuple):
    """The moment a request's Graph work must be done by, on an injected clock."""

    expires_at: float
    clock: Clock

    @classmethod
    def after(cls, seconds: float, clock: Clock) -> Deadline:
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        return max(0.0, self.expires_at - self.clock())

    def attempt_timeout(self) -> float:
        return min(ATTEMPT_TIMEOUT_CAP_SECONDS, self.remaining())


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a `Retry-After` value (at most MAX_WAIT_SECONDS), or None when absent,
    unreadable or not finite."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now_epoch
    if not math.isfinite(seconds):
        return None
    return min(MAX_WAIT_SECONDS, max(0.0, seconds))


def backoff(attempt: int, random: Callable[[], float]) -> float:
    """Exponential backoff with equal jitter for the wait after `attempt` (1-based) failed."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** (attempt - 1))
    return ceiling / 2 + random() * ceiling / 2


def plan_wait(attempt: int, retry_after: float | None, random: Callable[[], float]) -> float:
    """How long to wait after `attempt` failed: what Graph asked for, but never less than backoff.

    A `Retry-After: 0` (or a date in the past) repeated by a struggling service must not turn the
    retry loop into a busy loop that burns the tenant's throttling budget.
    """
    floor = backoff(attempt, random)
    return floor if retry_after is None else max(retry_after, floor)


def fits(wait: float, remaining: float, margin: float = MIN_ATTEMPT_SECONDS) -> bool:
    """Whether a wait still leaves `margin` seconds for one more attempt before the deadline."""
    return wait + margin <= remaining


class PaceWait(NamedTuple):
    """A write that may not be sent in time: how long it would wait, and whether for a 429."""

    seconds: float
    throttled: bool


class WritePacer:
    """At most `limit` writes in any `window` seconds, shared by every request of a process.

    Intune throttles writes per app and tenant, counting each when it arrives. We cannot see that
    moment, only that it lies between sending and the answer, so a write holds its place in the
    window from when it is sent until one window after its answer: however late it arrived,
    Intune has stopped counting it by then. A throttled write (`hold`) stops every write of the
    process for the `Retry-After`, rather than letting each caller find the limit for itself.
    A wait that would not end in time is not started: the caller gets its length instead, as a
    Retry-After.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Clock,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._sleep = sleep
        self._answered: collections.deque[float] = collections.deque()  # in time order
        self._in_flight = 0
        self._held_until = -math.inf

    def wait_needed(self) -> float:
        """Seconds until a write may be sent (0 when one may be sent now)."""
        return self._wait().seconds

    def _wait(self) -> PaceWait:
        now = self._clock()
        answered = self._answered
        while answered and answered[0] <= now - self._window:
            answered.popleft()
        held = self._held_until - now
        over = len(answered) + self._in_flight - self._limit + 1
        if over <= 0:
            return PaceWait(max(0.0, held), throttled=held > 0)
        # A write still in flight frees its place no sooner than one window from now.
        free = answered[over - 1] + self._window - now if over <= len(answered) else self._window
        return PaceWait(max(held, free), throttled=held >= free)

    async def acquire(self, deadline: Deadline) -> PaceWait | bool:
        """Take a place and say whether it had to wait for it, or return the wait that would pass
        the deadline (taking nothing).

        Every place taken is given back with `sent` or `unsent`.
        """
        waited = False
        while True:
            wait = self._wait()
            if wait.seconds <= 0:
                self._in_flight += 1
                return waited
            if wait.seconds + MIN_WRITE_SECONDS > deadline.remaining():
                return wait
            await self._sleep(wait.seconds)
            waited = True

    def sent(self) -> None:
        """The write was sent and its attempt is over (answered, failed or timed out): from now."""
        self._in_flight -= 1
        self._answered.append(self._clock())

    def unsent(self) -> None:
        """The place was taken but nothing was sent."""
        self._in_flight -= 1

    def hold(self, seconds: float) -> None:
        """Intune throttled a write: no write from this process for `seconds`."""
        self._held_until = max(self._held_until, self._clock() + min(seconds, MAX_WAIT_SECONDS))
