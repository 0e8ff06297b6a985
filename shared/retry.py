"""Retry policy within a deadline: pure functions of an injected clock and random source.

Graph tells us how long to wait (`Retry-After`: seconds, fractional seconds or an HTTP date);
when it does not, we back off exponentially with jitter. A wait that would end past the deadline
is never started: the caller gets an answer now instead of a timeout later.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
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
    """How long to wait after `attempt` failed: what Graph asked for, else backoff."""
    return retry_after if retry_after is not None else backoff(attempt, random)


def fits(wait: float, remaining: float) -> bool:
    """Whether a wait still leaves time for one more attempt before the deadline."""
    return wait + MIN_ATTEMPT_SECONDS <= remaining
