"""The dev host's timer trigger: NCRONTAB schedules, and a runner that fires like the host's.

A `timerTrigger` binding's `schedule` is read as Azure Functions reads it, with the NCrontab
library's rules: six fields, seconds first, `{second} {minute} {hour} {day} {month} {day-of-week}`;
each field `*`, a number, a range `a-b`, a step `*/n`, `a-b/n` or `a/n` (from `a` to the field's
end), or a comma list of these. Months and days of the week also take English names, in full or
cut to three letters or more (`Jan`, `MONDAY`), in any case. Day of week runs 0-6 with 0 = Sunday;
NCrontab's day-of-week field stops at 6, so 7 is refused here too.

Day of month and day of week are ANDed, as NCrontab does (it looks at the day of week only after it
has found a day, month and time), not ORed as in Vixie cron: `0 0 0 13 * FRI` is every Friday the
13th. With either field `*` this is the same as cron's rule.

Times are UTC, as in Azure when WEBSITE_TIME_ZONE is not set; the dev host does not read it.

Stricter than the host, on purpose: a backwards range (`5-1`), a step of 0 and one- or two-letter
names, all of which NCrontab quietly reinterprets, are errors here; so is a TimeSpan (`hh:mm:ss`)
schedule, which Azure accepts only on an App Service plan, not on the Flex Consumption plan this app
is deployed to. Nothing is persisted, so `useMonitor` has nothing to catch up on across restarts.
"""

from __future__ import annotations

import asyncio
import calendar
import inspect
import logging
import os
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, date, datetime, time, timedelta
from typing import Any, Protocol

import azure.functions as func
from azure.functions.timer import TimerRequest

# The Gregorian calendar, leap days and weekdays alike, repeats every 400 years: a date search that
# finds nothing in one whole cycle never will.
CALENDAR_CYCLE_YEARS = 400
# Occurrences fall on whole seconds; starting less than a second late is the event loop's jitter,
# not a missed occurrence.
PAST_DUE_TOLERANCE = timedelta(seconds=1)

_log = logging.getLogger("devtools.timers")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, tuple(name.lower() for name in calendar.month_name[1:])),
    _Field("day-of-week", 0, 6, ("sunday", "monday", "tuesday", "wednesday", "thursday",
                                 "friday", "saturday")),
)  # fmt: skip


@dataclass(frozen=True)
class Schedule:
    """A parsed NCRONTAB schedule: the values each field allows, in ascending order."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday

    def next_after(self, moment: datetime) -> datetime:
        """The first matching second strictly after `moment` (timezone-aware), in UTC.

        Skips whole months and days that cannot match, so far-off occurrences cost no more than
        near ones; a schedule with no occurrence in a whole calendar cycle (`0 0 0 31 2 *`) is a
        ValueError rather than an endless search.
        """
        if moment.utcoffset() is None:
            raise ValueError("next_after needs a timezone-aware moment")
        start = moment.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        for day in self._days_from(start.date()):
            found = self._first_time(start.time() if day == start.date() else time())
            if found is not None:
                return datetime.combine(day, found, UTC)
        raise ValueError(f"schedule {self.expression!r} never fires: no date matches it")

    def _days_from(self, first: date) -> Iterator[date]:
        last_year = min(first.year + CALENDAR_CYCLE_YEARS, MAXYEAR)
        for year in range(first.year, last_year + 1):
            for month in self.months:
                if (year, month) < (first.year, first.month):
                    continue
                month_length = calendar.monthrange(year, month)[1]
                for day in self.days:
                    if day > month_length:
                        break
                    candidate = date(year, month, day)
                    if candidate >= first and candidate.isoweekday() % 7 in self.weekdays:
                        yield candidate

    def _first_time(self, floor: time) -> time | None:
        for hour in _from(self.hours, floor.hour):
            minute_floor = floor.minute if hour == floor.hour else 0
            for minute in _from(self.minutes, minute_floor):
                on_floor = (hour, minute) == (floor.hour, floor.minute)
                seconds = _from(self.seconds, floor.second if on_floor else 0)
                if seconds:
                    return time(hour, minute, seconds[0])
        return None


def _from(values: tuple[int, ...], low: int) -> tuple[int, ...]:
    return values[bisect_left(values, low) :]


def parse_schedule(expression: str, settings: Mapping[str, str] | None = None) -> Schedule:
    """Parse a `schedule` value; `%Name%` is first looked up in `settings` (the environment).

    The host resolves a schedule wrapped in `%` from app settings (`local.settings.json` Values,
    which the dev host loads into the environment), so the same indirection works here.
    """
    resolved = _resolve(expression, os.environ if settings is None else settings)
    if ":" in resolved:
        raise ValueError(
            f"schedule {resolved!r} looks like a TimeSpan; Azure runs those only on an App Service"
            " plan, so the dev host takes NCRONTAB only: second minute hour day month day-of-week"
        )
    parts = resolved.split()
    if len(parts) != len(_FIELDS):
        raise ValueError(
            f"schedule {resolved!r} has {len(parts)} fields; NCRONTAB needs 6, seconds first:"
            " second minute hour day month day-of-week"
        )
    values = [_parse_field(field, part) for field, part in zip(_FIELDS, parts, strict=True)]
    return Schedule(" ".join(parts), *values)


def _resolve(expression: str, settings: Mapping[str, str]) -> str:
    if not (len(expression) > 2 and expression.startswith("%") and expression.endswith("%")):
        return expression
    name = expression[1:-1]
    value = settings.get(name)
    if value is None:
        raise ValueError(f"schedule {expression!r} names app setting {name!r}, which is not set")
    return value


def _parse_field(field: _Field, text: str) -> tuple[int, ...]:
    values: set[int] = set()
    for part in text.split(","):
        values.update(_parse_part(field, part))
    return tuple(sorted(values))


def _parse_part(field: _Field, part: str) -> range:
    body, slash, step_text = part.partition("/")
    step = _parse_step(field, step_text) if slash else 1
    if body == "*":
        low, high = field.low, field.high
    elif "-" in body:
        first, _, last = body.partition("-")
        low, high = _parse_value(field, first), _parse_value(field, last)
        if low > high:
            raise _field_error(field, f"range {body!r} runs backwards")
    else:
        low = _parse_value(field, body)
        high = field.high if slash else low
    return range(low, high + 1, step)


def _parse_step(field: _Field, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise _field_error(field, f"step {text!r} is not a whole number of 1 or more")
    return int(text)


def _parse_value(field: _Field, text: str) -> int:
    if not text:
        raise _field_error(field, "a value is missing")
    if text.isascii() and text.isdigit():
        value = int(text)
        if not field.low <= value <= field.high:
            raise _field_error(field, f"{value} is outside {field.low}-{field.high}")
        return value
    word = text.lower()
    if len(word) >= 3:
        for index, name in enumerate(field.names):
            if name.startswith(word):
                return field.low + index
    kind = "a number or a name (three letters or more)" if field.names else "a number"
    raise _field_error(field, f"{text!r} is not {kind}")


def _field_error(field: _Field, detail: str) -> ValueError:
    return ValueError(f"{field.name} field: {detail}")


class Clock(Protocol):
    """Where the runner reads the time and waits, so tests can move time by hand."""

    def now(self) -> datetime: ...

    async def sleep_until(self, moment: datetime) -> None: ...


class SystemClock:
    """Wall-clock UTC time; sleeps with asyncio."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, moment: datetime) -> None:
        # asyncio sleeps on the monotonic clock: if the wall clock moved meanwhile, wait again.
        while (delay := (moment - self.now()).total_seconds()) > 0:  # noqa: ASYNC110 - no event marks a wall-clock time
            await asyncio.sleep(delay)


Handler = Callable[[func.TimerRequest], Any]


class TimerRunner:
    """Fires one timer function on its schedule, one execution at a time, as the host does.

    As in the host's TimerListener, the next occurrence is counted from when the last execution
    started. So an occurrence that falls during a long execution fires as soon as it ends, once
    however many were missed, and that late start is past due. Unlike the host (which marks only a
    start-up catch-up past due), `past_due` here is what the documentation promises: the function
    started more than PAST_DUE_TOLERANCE after its scheduled time.
    """

    def __init__(
        self,
        function: str,
        schedule: Schedule,
        run_on_startup: bool,
        handler: Handler,
        clock: Clock,
    ) -> None:
        self.function = function
        self.schedule = schedule
        self.run_on_startup = run_on_startup
        self.handler = handler
        self.clock = clock

    async def run(self) -> None:
        """Fire on schedule until cancelled."""
        origin = self.clock.now()
        if self.run_on_startup:
            await self._execute(past_due=False)
        while True:
            due = self.schedule.next_after(origin)
            await self.clock.sleep_until(due)
            origin = max(self.clock.now(), due)
            await self._execute(past_due=origin - due > PAST_DUE_TOLERANCE)

    async def _execute(self, past_due: bool) -> None:
        request = TimerRequest(past_due=past_due)
        try:
            await self._call(request)
        except Exception:  # noqa: BLE001 - as in the host: a failed run is logged, the schedule goes on
            _log.exception("function %s raised", self.function)

    async def _call(self, request: TimerRequest) -> None:
        # The Python worker runs async functions on its event loop and sync ones in a thread pool;
        # doing the same keeps a slow sync job from stalling the dev host's HTTP routes. A thread
        # cannot be stopped, so a cancelled runner leaves a running sync job to finish on its own.
        if inspect.iscoroutinefunction(self.handler):
            await self.handler(request)
            return
        result = await asyncio.to_thread(self.handler, request)
        if inspect.isawaitable(result):
            await result
