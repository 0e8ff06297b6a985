"""One Intune write budget for every job worker on every instance, kept in one table entity.

Intune throttles writes per app and tenant, whichever instance sends them, so the per-process
`shared.retry.WritePacer` cannot pace bulk jobs worked on several instances at once. Their
workers draw from this budget instead: at most `writes_per_window` writes in ANY span of
`window_seconds`, not just in windows aligned to some clock (a fixed window lets up to twice
its budget through around a boundary, and Intune's limit is not documented as aligned).

It is a sliding log in one entity:

    PartitionKey  RowKey  properties
    <partition>   log     times: JSON list of the grant times (epoch seconds) in the last window
                          until: epoch seconds before which no worker sends a write (the hold)

A take reads the entity, forgets the times older than one window, and grants only when fewer
than `writes_per_window` remain, by writing the list back with its new time under the ETag it
read (If-Match). Of two workers that read the same log only one can write it; the other reads
again. So no span of `window_seconds` ever holds more grants than the budget, however threads
and processes interleave. A request the SDK resends after losing its answer can only record a
write nobody got, never grant one unrecorded.

A 429 seen by any worker becomes the shared hold, which only ever moves later: a short
`Retry-After` never cuts a longer one short. Every take reads it in the same read.

Times come from each instance's clock; Azure keeps them in sync to well under a second, small
next to a 20 s window. A skew between two instances' clocks comes off the travel allowance below;
past it, the 20 of Intune's 100 writes the default budget leaves to the HTTP functions remain.

A grant is stamped before its write reaches Graph: the rest of the conditional write of the
log, the way back to the worker, and the request to Graph come in between, each taking longer on
a busy instance. Writes granted at the edge of a window can therefore reach Graph closer together
than their grants were. So the log counts each grant over the window plus two allowances, and a
worker sends only on a grant still within the first (`fresh`), else it leaves the grant spent and
takes another:

- SEND_ALLOWANCE of the window, from the grant to the moment its write is handed to the HTTP
  client (enforced: an older grant is not used);
- TRAVEL_ALLOWANCE of the window, from there to Graph (a margin: the network is not ours);

each at least MIN_ALLOWANCE_SECONDS, which a storage round trip fits in even for short windows.

Then no span of `window_seconds` holds more than the budget's writes as they are sent, nor as
they arrive while the request to Graph takes less than its allowance, at the cost of those
shares of the rate (5 %).

The module is synchronous on purpose: the tables SDK's async client needs aiohttp, which the
app does not install, so workers call this through `asyncio.to_thread`. A `WriteBudget` keeps no
state between calls, so calls from many threads at once are as safe as the `TableClient` they
share.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from shared.retry import MAX_WAIT_SECONDS

LOG_ROW = "log"
# The log lives in one string property (at most 32 K UTF-16 characters): 1,000 times of about
# 18 characters each fit with room to spare.
MAX_WRITES_PER_WINDOW = 1_000
# Conditional writes a call may lose before it gives up. Each loss means another worker's write
# went through, so this many in a row is a crowd, not a fault: the caller waits a little instead.
MAX_ATTEMPTS = 25
# That little wait is random, so the crowd comes back spread out rather than all at once.
CONTENDED_WAIT_MIN_SECONDS = 0.05
CONTENDED_WAIT_MAX_SECONDS = 0.2
# Callers read 0 as "granted"; float rounding at a window's edge must not make a wait look like it.
MIN_WAIT_SECONDS = 0.001
# How long after its grant a write may still be sent, and then take to reach Graph, as shares of
# the window: 0.5 s each of Intune's 20 s. The log counts grants over the window plus both, so the
# budget's rate is that much lower.
SEND_ALLOWANCE = 0.025
TRAVEL_ALLOWANCE = 0.025
MIN_ALLOWANCE_SECONDS = 0.05


class Grant(NamedTuple):
    """A take's answer: `wait` 0.0 and the grant's time `at`, or the seconds to wait (`at` None)."""

    wait: float
    at: float | None = None


class WriteBudget:
    """At most `writes_per_window` writes in any `window_seconds`, shared through one table."""

    def __init__(
        self,
        table: TableClient,
        writes_per_window: int,
        window_seconds: float,
        clock: Callable[[], float] = time.time,
        partition: str = "budget",
        random: Callable[[], float] = random.random,
    ) -> None:
        if not 1 <= writes_per_window <= MAX_WRITES_PER_WINDOW:
            raise ValueError(
                f"writes_per_window must be 1 to {MAX_WRITES_PER_WINDOW}, not {writes_per_window}"
            )
        if not window_seconds > 0:  # written so that NaN is refused too
            raise ValueError(f"window_seconds must be positive, not {window_seconds}")
        self._table = table
        self._limit = writes_per_window
        self.window_seconds = window_seconds
        self.send_allowance_seconds = max(MIN_ALLOWANCE_SECONDS, window_seconds * SEND_ALLOWANCE)
        travel = max(MIN_ALLOWANCE_SECONDS, window_seconds * TRAVEL_ALLOWANCE)
        # What each grant counts over.
        self.span_seconds = window_seconds + self.send_allowance_seconds + travel
        self._clock = clock
        self._partition = partition
        self._random = random

    def try_take(self) -> float:
        """`take`'s wait alone: 0.0 when a write was taken."""
        return self.take().wait

    def fresh(self, grant: Grant) -> bool:
        """Whether a write may still be sent on `grant`: within the send allowance of it."""
        return grant.at is not None and self._clock() - grant.at <= self.send_allowance_seconds

    def take(self) -> Grant:
        """Take one write (wait 0.0, and the time it was granted at), or take none and say how
        many seconds to wait: until the hold ends, or the oldest grant of the last window plus
        the send allowance leaves it.

        Each attempt reads the clock again, and a grant is never stamped before the latest one
        in the log: a time taken before a lost round (or on a clock a little behind) would
        judge, and prune, the log as it was a moment ago, and let an extra write through.
        """
        for _ in range(MAX_ATTEMPTS):
            entity = self._log()
            logged = _times(entity)
            now = max(self._clock(), logged[-1] if logged else -math.inf)
            held = float(entity["until"]) - now
            if held > 0:
                return Grant(held)
            times = [t for t in logged if t > now - self.span_seconds]
            if len(times) >= self._limit:
                return Grant(max(MIN_WAIT_SECONDS, times[-self._limit] + self.span_seconds - now))
            if self._update(entity, times=json.dumps([*times, now])):
                return Grant(0.0, now)
        return Grant(self._contended_wait())

    def hold(self, seconds: float) -> None:
        """Intune throttled a write: no worker anywhere takes a write for `seconds` (at most
        MAX_WAIT_SECONDS, so one hostile `Retry-After` cannot stop every job for a day).

        A hold already ending later is kept. If every attempt is lost, it gives up quietly:
        each loss was another worker writing the log, in the same burst of 429s.
        """
        bounded = min(MAX_WAIT_SECONDS, max(0.0, seconds))  # max first: NaN becomes 0
        if bounded == 0:
            return
        until = self._clock() + bounded
        for _ in range(MAX_ATTEMPTS):
            entity = self._log()
            if float(entity["until"]) >= until or self._update(entity, until=until):
                return

    def _log(self) -> TableEntity:
        """The log as stored, created empty the first time any worker looks."""
        try:
            return self._table.get_entity(self._partition, LOG_ROW)
        except ResourceNotFoundError:
            pass
        with contextlib.suppress(ResourceExistsError):  # another worker created it: read theirs
            self._table.create_entity(
                {"PartitionKey": self._partition, "RowKey": LOG_ROW, "times": "[]", "until": 0.0}
            )
        return self._table.get_entity(self._partition, LOG_ROW)

    def _update(self, entity: TableEntity, **properties: Any) -> bool:
        """Change the log as we read it; False when it changed since."""
        try:
            self._table.update_entity(
                {"PartitionKey": self._partition, "RowKey": LOG_ROW, **properties},
                mode=UpdateMode.MERGE,
                etag=entity.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def _contended_wait(self) -> float:
        spread = CONTENDED_WAIT_MAX_SECONDS - CONTENDED_WAIT_MIN_SECONDS
        return CONTENDED_WAIT_MIN_SECONDS + self._random() * spread


def _times(entity: TableEntity) -> list[float]:
    """The logged grant times, oldest first; a log that is not a list of numbers is a fault."""
    loaded = json.loads(str(entity["times"]))
    if not isinstance(loaded, list) or not all(isinstance(t, int | float) for t in loaded):
        raise ValueError("the write budget's log is not a list of times")
    return sorted(float(t) for t in loaded if math.isfinite(t))
