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
from dataclasses import dataclass

Clock = Callable[[], float]

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 8.0
# Each attempt gets at most this long, so one hung connection cannot eat the whole deadline.
ATTEMPT_TIMEOUT_CAP_SECONDS = 10.0
# An attempt started with less time than this left would most likely time out half-way.
MIN_ATTEMPT_SECONDS = 0.25
# A write started with less time than this left could land after we told the caller it failed.
MIN_WRITE_SECONDS = 1.0


@dataclass(frozen=True)
class Deadline:
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
    """Seconds to wait from a `Retry-After` value, or None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now_epoch
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


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


class WritePacer:
    """At most `limit` write attempts in any `window` seconds, shared by every request of a process.

    Intune throttles writes per app and tenant; pacing them here turns what would be a storm of
    429s into short waits. A wait that would not end in time is not started: the caller gets its
    length instead, as a Retry-After.
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
        self._starts: collections.deque[float] = collections.deque()

    def wait_needed(self) -> float:
        """Seconds until a write may start (0 when one may start now)."""
        now = self._clock()
        while self._starts and self._starts[0] <= now - self._window:
            self._starts.popleft()
        if len(self._starts) < self._limit:
            return 0.0
        return self._starts[0] + self._window - now

    async def acquire(self, deadline: Deadline) -> float | None:
        """Take a write slot and return None, or return the wait that would pass the deadline."""
        while True:
            wait = self.wait_needed()
            if wait <= 0:
                self._starts.append(self._clock())
                return None
            if wait + MIN_WRITE_SECONDS > deadline.remaining():
                return wait
            await self._sleep(wait)
