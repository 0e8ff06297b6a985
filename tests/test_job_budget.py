"""The shared write budget (shared.jobs.budget) on a real Azurite table, across processes too."""

from __future__ import annotations

import math
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any, cast

import pytest
from azure.core.exceptions import ResourceModifiedError
from azure.data.tables import TableClient, TableEntity, TableServiceClient

from devtools.azurite import Azurite
from shared.jobs.budget import (
    MAX_ATTEMPTS,
    MIN_ALLOWANCE_SECONDS,
    SEND_ALLOWANCE,
    TRAVEL_ALLOWANCE,
    Grant,
    WriteBudget,
)
from shared.retry import MAX_WAIT_SECONDS
from tests.fakes import FakeClock

WINDOW_INDEX = 90_000_000  # a window of 20 s in 2027
WINDOW_START = WINDOW_INDEX * 20.0
# A grant counts for the window plus the send and travel allowances: 21 s for a 20 s window.
ALLOWANCE = 20.0 * SEND_ALLOWANCE
SPAN = 20.0 * (1 + SEND_ALLOWANCE + TRAVEL_ALLOWANCE)


def test_the_allowances_are_shares_of_the_window_with_a_floor(table: TableClient) -> None:
    assert WriteBudget(table, 80, 20.0).span_seconds == pytest.approx(21.0)
    assert WriteBudget(table, 80, 2.0).span_seconds == pytest.approx(2.1)
    short = WriteBudget(table, 80, 0.1)  # a storage round trip must still fit
    assert short.send_allowance_seconds == MIN_ALLOWANCE_SECONDS
    assert short.span_seconds == pytest.approx(0.1 + 2 * MIN_ALLOWANCE_SECONDS)


# The race: three processes, as on three instances, each taking as fast as it may.
RACE_WORKERS = 3
RACE_BUDGET = 7
RACE_WINDOW_SECONDS = 0.5
RACE_SECONDS = 3.0
RACE_START_TIMEOUT_SECONDS = 30.0  # spawning and importing the SDK, on a busy machine


@pytest.fixture
def table(azurite: Azurite) -> Iterator[TableClient]:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    client = service.create_table(f"budget{uuid.uuid4().hex[:12]}")
    yield client
    service.delete_table(client.table_name)


def at(seconds_into_window: float) -> FakeClock:
    return FakeClock(now=WINDOW_START + seconds_into_window)


def test_any_window_holds_at_most_the_budget_and_a_full_one_says_when_a_slot_frees(
    table: TableClient,
) -> None:
    clock = at(5.0)
    budget = WriteBudget(table, writes_per_window=3, window_seconds=20.0, clock=clock)

    assert [budget.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.try_take() == pytest.approx(SPAN)  # the three leave the window at 5.0 + SPAN
    clock.now += 14.5
    assert budget.try_take() == pytest.approx(SPAN - 14.5)
    clock.now += SPAN - 14.5
    assert [budget.try_take() for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(SPAN)]


def test_the_window_slides_with_time_not_with_a_clock_boundary(table: TableClient) -> None:
    """Grants at 0, 10 and 10: at 15 the window is full until the grant at 0 leaves it."""
    clock = at(0.0)
    budget = WriteBudget(table, writes_per_window=3, window_seconds=20.0, clock=clock)
    assert budget.try_take() == 0.0
    clock.now += 10.0
    assert [budget.try_take(), budget.try_take()] == [0.0, 0.0]
    clock.now += 5.0
    assert budget.try_take() == pytest.approx(SPAN - 15.0)
    clock.now += SPAN - 15.0 + 0.001
    assert budget.try_take() == 0.0  # one slot, the grant at 0's
    assert budget.try_take() == pytest.approx(9.999)  # then full until the two at 10 leave


def test_a_grant_says_when_it_was_made_and_stays_fresh_for_the_send_allowance(
    table: TableClient,
) -> None:
    clock = at(5.0)
    budget = WriteBudget(table, writes_per_window=1, window_seconds=20.0, clock=clock)
    grant = budget.take()
    assert grant == Grant(0.0, WINDOW_START + 5.0)
    assert ALLOWANCE == 0.5  # Intune's 20 s window: half a second to send
    clock.now += ALLOWANCE
    assert budget.fresh(grant)
    clock.now += 0.001
    assert not budget.fresh(grant)  # aged: the worker takes another slot instead
    assert not budget.fresh(budget.take())  # a refusal (a wait) is never a grant
    refused = budget.take()
    assert refused.wait == pytest.approx(SPAN - ALLOWANCE - 0.001) and refused.at is None


def test_a_hold_set_by_one_worker_stops_every_worker_and_only_moves_later(
    table: TableClient,
) -> None:
    clock = at(5.0)
    throttled = WriteBudget(table, writes_per_window=80, window_seconds=20.0, clock=clock)
    other = WriteBudget(table, writes_per_window=80, window_seconds=20.0, clock=clock)

    throttled.hold(5.0)
    assert [other.try_take(), throttled.try_take()] == [5.0, 5.0]
    clock.now += 1.0
    assert other.try_take() == 4.0
    throttled.hold(1.0)  # a shorter Retry-After does not cut the hold short
    assert other.try_take() == 4.0
    throttled.hold(10.0)
    assert other.try_take() == 10.0

    clock.now += 10.0
    assert other.try_take() == 0.0


def test_a_hold_lasts_at_most_the_longest_wait_we_take(table: TableClient) -> None:
    clock = at(5.0)
    budget = WriteBudget(table, writes_per_window=80, window_seconds=20.0, clock=clock)

    budget.hold(86_400.0)
    assert budget.try_take() == MAX_WAIT_SECONDS


def take_for_a_while(connection_string: str, table_name: str, start: Barrier) -> list[float]:
    """One racing process: take as fast as the budget allows; the time of each grant."""
    clock = RecordingClock()
    budget = WriteBudget(
        TableClient.from_connection_string(connection_string, table_name),
        writes_per_window=RACE_BUDGET,
        window_seconds=RACE_WINDOW_SECONDS,
        clock=clock,
    )
    start.wait(RACE_START_TIMEOUT_SECONDS)
    stop_at = time.time() + RACE_SECONDS
    granted: list[float] = []
    while (now := time.time()) < stop_at:
        wait = budget.try_take()
        if wait == 0.0:
            granted.append(clock.last)
        else:
            time.sleep(min(wait, stop_at - now))
    return granted


def race(
    connection_string: str, table_name: str, start: Barrier, results: Queue[list[float]]
) -> None:
    """The body of a racing process: its grants go back to the test through `results`."""
    results.put(take_for_a_while(connection_string, table_name, start))


class RecordingClock:
    """Real time, remembering the moment the budget last read (it reads once per take)."""

    last = 0.0

    def __call__(self) -> float:
        self.last = time.time()
        return self.last


def test_processes_sharing_the_budget_never_take_more_than_a_window_holds(
    azurite: Azurite, table: TableClient
) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(RACE_WORKERS)
    results = context.Queue()
    processes = [
        context.Process(
            target=race, args=(azurite.connection_string, table.table_name, start, results)
        )
        for _ in range(RACE_WORKERS)
    ]
    for process in processes:
        process.start()
    try:
        grants = [
            results.get(timeout=RACE_START_TIMEOUT_SECONDS + RACE_SECONDS + 10) for _ in processes
        ]
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
    times = sorted(t for granted in grants for t in granted)
    # Any RACE_BUDGET + 1 grants in a row span at least one window and its allowances: no window
    # holds more, even for writes that reach Graph up to the allowances after their grant.
    spans = [times[i + RACE_BUDGET] - times[i] for i in range(len(times) - RACE_BUDGET)]
    span = WriteBudget(table, RACE_BUDGET, RACE_WINDOW_SECONDS).span_seconds
    assert span > RACE_WINDOW_SECONDS
    assert min(spans) >= span, min(spans)
    # The positive control: windows did fill (RACE_BUDGET grants within one window), so the
    # bound above could have broken.
    full = [
        times[i + RACE_BUDGET - 1] - times[i] < RACE_WINDOW_SECONDS
        for i in range(len(times) - RACE_BUDGET + 1)
    ]
    assert sum(full) >= 2, times
    assert all(process.exitcode == 0 for process in processes)


class ContendedTable:
    """A log that some other worker always changes between our read and our update."""

    def __init__(self) -> None:
        self.updates = 0

    def get_entity(self, partition_key: str, row_key: str) -> TableEntity:
        entity = TableEntity(PartitionKey=partition_key, RowKey=row_key, times="[]", until=0.0)
        entity._metadata = {"etag": f'W/"{self.updates}"', "timestamp": None}
        return entity

    def update_entity(self, entity: Any, **kwargs: Any) -> dict[str, Any]:
        self.updates += 1
        raise ResourceModifiedError(
            "the condition specified using HTTP conditional header(s) is not met"
        )


def test_a_take_lost_every_time_to_other_workers_waits_a_moment_instead_of_failing() -> None:
    contended = ContendedTable()
    budget = WriteBudget(
        cast(TableClient, contended),
        writes_per_window=80,
        window_seconds=20.0,
        clock=at(5.0),
        random=lambda: 0.5,
    )

    assert budget.try_take() == pytest.approx(0.125)
    assert contended.updates == MAX_ATTEMPTS


@pytest.mark.parametrize(
    ("writes_per_window", "window_seconds"),
    [(0, 20.0), (-1, 20.0), (1_001, 20.0), (80, 0.0), (80, -20.0), (80, math.nan)],
)
def test_a_budget_that_could_never_grant_is_refused(
    writes_per_window: int, window_seconds: float
) -> None:
    with pytest.raises(ValueError, match="must be"):
        WriteBudget(cast(TableClient, ContendedTable()), writes_per_window, window_seconds)
