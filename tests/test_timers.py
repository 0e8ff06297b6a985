"""The dev host's timer trigger: NCRONTAB parsing, next occurrences, and the runner on a hand clock."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone

import azure.functions as func
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools.timers import SystemClock, TimerRunner, parse_schedule

EVERY_FIVE_MINUTES = "0 */5 * * * *"
START = datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)
WAIT_GUARD_SECONDS = 5.0  # only ever reached if the runner hangs: every wait below is on an event


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


class ManualClock:
    """Time stands still until the test moves it; a sleeper wakes once its moment is reached."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._moved = asyncio.Event()
        self.sleeps: asyncio.Queue[datetime] = asyncio.Queue()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, moment: datetime) -> None:
        if moment > self._now:
            self.sleeps.put_nowait(moment)
        while self._now < moment:
            await self._moved.wait()

    def advance_to(self, moment: datetime) -> None:
        self._now = moment
        self._moved.set()
        self._moved = asyncio.Event()

    async def next_sleep(self) -> datetime:
        """The moment the runner sleeps until next: by then it has finished what came before."""
        return await asyncio.wait_for(self.sleeps.get(), WAIT_GUARD_SECONDS)


Fired = list[tuple[datetime, bool]]


def recorder(clock: ManualClock, fired: Fired) -> Callable[[func.TimerRequest], Awaitable[None]]:
    async def handler(timer: func.TimerRequest) -> None:
        fired.append((clock.now(), timer.past_due))

    return handler


def runner(clock: ManualClock, handler: Callable[[func.TimerRequest], object]) -> TimerRunner:
    schedule = parse_schedule(EVERY_FIVE_MINUTES)
    return TimerRunner("Tick", schedule, False, handler, clock)


# Parsing


def test_every_field_form_parses_to_its_values() -> None:
    schedule = parse_schedule("*/20 5,10 1-3 1-10/3 */5 2/2")
    assert schedule.seconds == (0, 20, 40)
    assert schedule.minutes == (5, 10)
    assert schedule.hours == (1, 2, 3)
    assert schedule.days == (1, 4, 7, 10)
    assert schedule.months == (1, 6, 11)
    assert schedule.weekdays == (2, 4, 6)


def test_a_star_is_the_whole_range() -> None:
    schedule = parse_schedule("* * * * * *")
    assert schedule.seconds == tuple(range(60))
    assert schedule.hours == tuple(range(24))
    assert schedule.days == tuple(range(1, 32))
    assert schedule.months == tuple(range(1, 13))
    assert schedule.weekdays == tuple(range(7))


def test_lists_mix_numbers_ranges_and_steps() -> None:
    assert parse_schedule("0,30-32,50/5 * * * * *").seconds == (0, 30, 31, 32, 50, 55)


def test_month_and_day_names_in_any_case() -> None:
    schedule = parse_schedule("0 30 9 * Jan,MAR,december sun,Mon-FRI")
    assert schedule.months == (1, 3, 12)
    assert schedule.weekdays == (0, 1, 2, 3, 4, 5)


def test_full_and_longer_names_as_ncrontab_reads_them() -> None:
    schedule = parse_schedule("0 0 0 * sept-nov/2 Saturday,thurs")
    assert schedule.months == (9, 11)
    assert schedule.weekdays == (4, 6)


def test_zero_is_sunday() -> None:
    assert parse_schedule("0 0 0 * * 0").weekdays == parse_schedule("0 0 0 * * SUN").weekdays


def test_spaces_between_fields_may_repeat() -> None:
    assert parse_schedule("  0  */5 * * * *  ") == parse_schedule(EVERY_FIVE_MINUTES)


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ("60 * * * * *", "second"),
        ("1,,2 * * * * *", "second"),
        ("*/x * * * * *", "second"),
        ("? * * * * *", "second"),
        ("* 60 * * * *", "minute"),
        ("* 1- * * * *", "minute"),
        ("* 5-1 * * * *", "minute"),
        ("* * 24 * * *", "hour"),
        ("* * -1 * * *", "hour"),
        ("* * 1-2-3 * * *", "hour"),
        ("* * * 0 * *", "day"),
        ("* * * 32 * *", "day"),
        ("* * * L * *", "day"),
        ("* * * * 13 *", "month"),
        ("* * * * */0 *", "month"),
        ("* * * * FOO *", "month"),
        ("* * * * ja *", "month"),
        ("* * * * * 7", "day-of-week"),
        ("* * * * * */", "day-of-week"),
        ("* * * * * 5#3", "day-of-week"),
        ("* * * * * MO", "day-of-week"),
        ("* * * * * ,", "day-of-week"),
    ],
)
def test_a_malformed_field_is_refused_by_name(expression: str, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(field)} field: "):
        parse_schedule(expression)


@pytest.mark.parametrize("expression", ["", "0 */5 * * *", "0 0 0 * * * 2025"])
def test_a_schedule_needs_six_fields(expression: str) -> None:
    with pytest.raises(ValueError, match="needs 6"):
        parse_schedule(expression)


def test_a_timespan_schedule_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="TimeSpan"):
        parse_schedule("00:05:00")


# App settings


def test_a_schedule_can_come_from_an_app_setting() -> None:
    resolved = parse_schedule("%TimerSchedule%", {"TimerSchedule": EVERY_FIVE_MINUTES})
    assert resolved == parse_schedule(EVERY_FIVE_MINUTES)


def test_app_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TimerSchedule", "0 0 * * * *")
    assert parse_schedule("%TimerSchedule%").minutes == (0,)


def test_an_unset_app_setting_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"'TimerSchedule'.*not set"):
        parse_schedule("%TimerSchedule%", {})


def test_an_app_setting_holding_a_bad_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^hour field: "):
        parse_schedule("%TimerSchedule%", {"TimerSchedule": "0 0 25 * * *"})


# Next occurrence


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        ("* * * * * *", at(2025, 1, 1, 12, 0, 59), at(2025, 1, 1, 12, 1, 0)),
        ("0 * * * * *", at(2025, 1, 1, 12, 59, 0), at(2025, 1, 1, 13, 0, 0)),
        ("0 0 * * * *", at(2025, 1, 1, 23, 0, 0), at(2025, 1, 2, 0, 0, 0)),
        ("0 0 0 * * *", at(2025, 2, 28, 0, 0, 0), at(2025, 3, 1, 0, 0, 0)),
        ("0 0 0 * * *", at(2024, 2, 28, 0, 0, 0), at(2024, 2, 29, 0, 0, 0)),
        ("0 0 0 1 * *", at(2025, 1, 31, 8, 0, 0), at(2025, 2, 1, 0, 0, 0)),
        ("59 59 23 31 12 *", at(2025, 12, 31, 23, 59, 59), at(2026, 12, 31, 23, 59, 59)),
        ("0 0 0 1 1 *", at(2025, 12, 31, 23, 59, 59), at(2026, 1, 1, 0, 0, 0)),
        ("0 0 0 31 * *", at(2025, 4, 1, 0, 0, 0), at(2025, 5, 31, 0, 0, 0)),
        ("0 0 0 29 2 *", at(2025, 3, 1, 0, 0, 0), at(2028, 2, 29, 0, 0, 0)),
        ("0 30 9 * * MON-FRI", at(2025, 1, 3, 10, 0, 0), at(2025, 1, 6, 9, 30, 0)),
        (EVERY_FIVE_MINUTES, at(2025, 1, 1, 12, 3, 7), at(2025, 1, 1, 12, 5, 0)),
        ("10-12 30 * * * *", at(2025, 1, 1, 12, 30, 11), at(2025, 1, 1, 12, 30, 12)),
        ("10-12 30 * * * *", at(2025, 1, 1, 12, 30, 12), at(2025, 1, 1, 13, 30, 10)),
    ],
)
def test_next_after_crosses_boundaries(
    expression: str, moment: datetime, expected: datetime
) -> None:
    assert parse_schedule(expression).next_after(moment) == expected


def test_next_after_is_strictly_after_a_matching_moment() -> None:
    schedule = parse_schedule("0 0 * * * *")
    assert schedule.next_after(at(2025, 1, 1, 12, 0, 0)) == at(2025, 1, 1, 13, 0, 0)
    just_before = at(2025, 1, 1, 11, 59, 59) + timedelta(microseconds=999_999)
    assert schedule.next_after(just_before) == at(2025, 1, 1, 12, 0, 0)


def test_next_after_answers_in_utc_for_any_offset() -> None:
    two_hours_ahead = datetime(2025, 1, 1, 14, 3, 0, tzinfo=timezone(timedelta(hours=2)))
    found = parse_schedule(EVERY_FIVE_MINUTES).next_after(two_hours_ahead)
    assert found == at(2025, 1, 1, 12, 5, 0)
    assert found.tzinfo is UTC


def test_a_naive_moment_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule(EVERY_FIVE_MINUTES).next_after(datetime(2025, 1, 1))


def test_day_of_month_and_day_of_week_must_both_match_as_in_ncrontab() -> None:
    friday_the_13th = parse_schedule("0 0 0 13 * FRI")
    assert friday_the_13th.next_after(at(2025, 1, 1)) == at(2025, 6, 13)
    assert friday_the_13th.next_after(at(2025, 6, 13)) == at(2026, 2, 13)


def test_with_one_day_field_a_star_only_the_other_counts() -> None:
    assert parse_schedule("0 0 0 13 * *").next_after(at(2025, 1, 1)) == at(2025, 1, 13)
    assert parse_schedule("0 0 0 * * FRI").next_after(at(2025, 1, 1)) == at(2025, 1, 3)


def test_a_rare_occurrence_decades_away_is_still_found() -> None:
    leap_day_on_a_monday = parse_schedule("0 0 0 29 FEB MON")
    assert leap_day_on_a_monday.next_after(at(2025, 1, 1)) == at(2044, 2, 29)


@pytest.mark.parametrize("expression", ["0 0 0 31 2 *", "0 0 0 30 FEB *", "0 0 0 31 4,6,9,11 *"])
def test_a_schedule_that_never_fires_is_an_error(expression: str) -> None:
    with pytest.raises(ValueError, match="never fires"):
        parse_schedule(expression).next_after(at(2025, 1, 1))


def field_values(low: int, high: int) -> st.SearchStrategy[tuple[str, frozenset[int]]]:
    """A field's text and, worked out here independently, the values it allows."""
    every = frozenset(range(low, high + 1))
    value = st.integers(low, high)
    star = st.just(("*", every))
    step = st.integers(1, high - low + 1).map(
        lambda n: (f"*/{n}", frozenset(range(low, high + 1, n)))
    )
    listed = st.lists(value, min_size=1, max_size=4).map(
        lambda vs: (",".join(map(str, vs)), frozenset(vs))
    )
    ranged = st.tuples(value, value, st.integers(1, 10)).map(
        lambda t: (
            f"{min(t[:2])}-{max(t[:2])}/{t[2]}",
            frozenset(range(min(t[:2]), max(t[:2]) + 1, t[2])),
        )
    )
    return st.one_of(star, step, listed, ranged)


@given(
    seconds=field_values(0, 59),
    minutes=field_values(0, 59),
    moment=st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
)
def test_next_after_is_the_first_matching_second(
    seconds: tuple[str, frozenset[int]],
    minutes: tuple[str, frozenset[int]],
    moment: datetime,
) -> None:
    # Every hour and day allowed: the answer is within the hour, so every second can be checked.
    found = parse_schedule(f"{seconds[0]} {minutes[0]} * * * *").next_after(moment)
    assert found > moment
    assert found.microsecond == 0
    assert found.second in seconds[1] and found.minute in minutes[1]
    first, last = int(moment.timestamp()) + 1, int(found.timestamp())
    assert not any(t % 60 in seconds[1] and t // 60 % 60 in minutes[1] for t in range(first, last))


# The runner


def test_fires_at_each_scheduled_time_not_past_due() -> None:
    async def go() -> Fired:
        clock = ManualClock(START)
        fired: Fired = []
        task = asyncio.create_task(runner(clock, recorder(clock, fired)).run())
        for _ in range(3):
            clock.advance_to(await clock.next_sleep())
        await clock.next_sleep()
        task.cancel()
        return fired

    assert asyncio.run(go()) == [
        (at(2025, 1, 1, 12, 5, 0), False),
        (at(2025, 1, 1, 12, 10, 0), False),
        (at(2025, 1, 1, 12, 15, 0), False),
    ]


def test_run_on_startup_fires_once_at_once_then_keeps_the_schedule() -> None:
    async def go() -> tuple[Fired, datetime, Fired]:
        clock = ManualClock(START)
        fired: Fired = []
        schedule = parse_schedule(EVERY_FIVE_MINUTES)
        task = asyncio.create_task(
            TimerRunner("Tick", schedule, True, recorder(clock, fired), clock).run()
        )
        first_sleep = await clock.next_sleep()
        at_startup = list(fired)
        clock.advance_to(first_sleep)
        await clock.next_sleep()
        task.cancel()
        return at_startup, first_sleep, fired

    at_startup, first_sleep, fired = asyncio.run(go())
    assert at_startup == [(START, False)]
    assert first_sleep == at(2025, 1, 1, 12, 5, 0)
    assert fired == [(START, False), (first_sleep, False)]


def test_an_overrunning_execution_is_never_overlapped_and_the_catch_up_is_past_due() -> None:
    async def go() -> tuple[Fired, int, datetime]:
        clock = ManualClock(START)
        fired: Fired = []
        started, release = asyncio.Event(), asyncio.Event()
        running, most = 0, 0

        async def handler(timer: func.TimerRequest) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            fired.append((clock.now(), timer.past_due))
            started.set()
            if len(fired) == 1:
                await release.wait()
            running -= 1

        task = asyncio.create_task(runner(clock, handler).run())
        clock.advance_to(await clock.next_sleep())
        await asyncio.wait_for(started.wait(), WAIT_GUARD_SECONDS)
        clock.advance_to(at(2025, 1, 1, 12, 16, 0))  # 12:10 and 12:15 pass while it runs
        release.set()
        after_catch_up = await clock.next_sleep()
        task.cancel()
        return fired, most, after_catch_up

    fired, most, after_catch_up = asyncio.run(go())
    assert most == 1
    assert fired == [(at(2025, 1, 1, 12, 5, 0), False), (at(2025, 1, 1, 12, 16, 0), True)]
    assert after_catch_up == at(2025, 1, 1, 12, 20, 0)


def test_a_raising_handler_is_logged_and_the_timer_keeps_firing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> Fired:
        clock = ManualClock(START)
        fired: Fired = []

        async def handler(timer: func.TimerRequest) -> None:
            fired.append((clock.now(), timer.past_due))
            raise RuntimeError("boom")

        task = asyncio.create_task(runner(clock, handler).run())
        for _ in range(2):
            clock.advance_to(await clock.next_sleep())
        await clock.next_sleep()
        task.cancel()
        return fired

    with caplog.at_level(logging.ERROR, logger="devtools.timers"):
        fired = asyncio.run(go())
    assert [moment for moment, _ in fired] == [at(2025, 1, 1, 12, 5), at(2025, 1, 1, 12, 10)]
    errors = [r for r in caplog.records if r.name == "devtools.timers"]
    assert [r.getMessage() for r in errors] == ["function Tick raised"] * 2
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in errors)


def test_a_sync_handler_runs_off_the_event_loop_thread() -> None:
    async def go() -> list[int]:
        clock = ManualClock(START)
        threads: list[int] = []

        def handler(timer: func.TimerRequest) -> None:
            threads.append(threading.get_ident())

        task = asyncio.create_task(runner(clock, handler).run())
        clock.advance_to(await clock.next_sleep())
        await clock.next_sleep()
        task.cancel()
        return threads

    threads = asyncio.run(go())
    assert len(threads) == 1 and threads[0] != threading.get_ident()


def test_cancelling_the_run_task_stops_the_timer() -> None:
    async def go() -> tuple[bool, Fired]:
        clock = ManualClock(START)
        fired: Fired = []
        task = asyncio.create_task(runner(clock, recorder(clock, fired)).run())
        next_fire = await clock.next_sleep()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        clock.advance_to(next_fire + timedelta(hours=1))
        await asyncio.sleep(0)
        return task.cancelled(), fired

    assert asyncio.run(go()) == (True, [])


def test_cancelling_during_an_execution_stops_it_too() -> None:
    async def go() -> tuple[bool, bool]:
        clock, started, finished = ManualClock(START), asyncio.Event(), False

        async def handler(timer: func.TimerRequest) -> None:
            nonlocal finished
            started.set()
            await asyncio.Event().wait()
            finished = True

        task = asyncio.create_task(runner(clock, handler).run())
        clock.advance_to(await clock.next_sleep())
        await asyncio.wait_for(started.wait(), WAIT_GUARD_SECONDS)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled(), finished

    assert asyncio.run(go()) == (True, False)


def test_the_system_clock_is_utc_and_does_not_sleep_for_the_past() -> None:
    clock = SystemClock()
    now = clock.now()
    assert now.tzinfo is UTC
    asyncio.run(clock.sleep_until(now - timedelta(hours=1)))
    asyncio.run(clock.sleep_until(clock.now() + timedelta(milliseconds=2)))
    assert clock.now() >= now + timedelta(milliseconds=2)
