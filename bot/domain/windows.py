"""Maintenance windows: when privileged work is expected. A window starts at each time its
cron expression names (in its own time zone, daylight saving included) and lasts its duration
of elapsed time: [start, start + duration)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger


@dataclass(frozen=True)
class Window:
    name: str
    cron: str  # standard 5 fields: minute hour day-of-month month day-of-week
    duration: timedelta
    timezone: str
    resources: frozenset[str] | None = None  # None: every resource

    @cached_property
    def _trigger(self) -> CronTrigger:
        return cron_trigger(self.cron, ZoneInfo(self.timezone))

    def applies_to(self, resource: str) -> bool:
        return self.resources is None or resource in self.resources

    def start_of(self, at: datetime) -> datetime | None:
        """The start of this window's occurrence that `at` falls in, or None."""
        at = at.astimezone(UTC)
        # The first start after `at - duration` (starts are whole seconds, so "after" is
        # "at or after" one microsecond later); `at` is inside if that start is not after it.
        start = self._next(at - self.duration + timedelta(microseconds=1))
        if start is not None and start <= at:
            return start
        return None

    def _next(self, since: datetime) -> datetime | None:
        """The first start at or after `since`. A start time that the end of daylight saving
        repeats (02:30 twice) starts the window once: at its first occurrence."""
        start = self._trigger.get_next_fire_time(None, since)
        while start is not None and start.fold == 1:
            # Arithmetic on local time drops `fold`: step on from the instant, in UTC.
            after = start.astimezone(UTC) + timedelta(seconds=1)
            start = self._trigger.get_next_fire_time(None, after)
        return None if start is None else start.astimezone(UTC)

    def starts_between(self, since: datetime, until: datetime) -> list[datetime]:
        """Every start in [since, until), for charts and digests."""
        out: list[datetime] = []
        start = self._next(since.astimezone(UTC))
        while start is not None and start < until:
            out.append(start)
            start = self._next(start + timedelta(seconds=1))
        return out


@dataclass(frozen=True)
class Placement:
    """Where a moment falls for a resource: inside a window (its name), outside all of the
    windows that apply, or nowhere to compare (no window applies: `outside` is None)."""

    outside: bool | None
    window: str | None = None


def place(windows: Iterable[Window], resource: str, at: datetime) -> Placement:
    applicable = [w for w in windows if w.applies_to(resource)]
    if not applicable:
        return Placement(outside=None)
    for window in applicable:
        if window.start_of(at) is not None:
            return Placement(outside=False, window=window.name)
    return Placement(outside=True)


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _day(token: str, expr: str) -> int:
    token = token.lower()
    if token in _DAYS:
        return _DAYS.index(token)
    if token.isascii() and token.isdigit() and int(token) <= 7:
        return int(token) % 7  # 0 and 7 are both Sunday
    raise ValueError(f"cron {expr!r}: {token!r} is not a day of the week (0-7 or sun-sat)")


def _weekdays(field: str, expr: str) -> str:
    """Standard cron's day-of-week field (0 or 7 = Sunday) as APScheduler 3 reads it (by
    name: its numbers start on Monday)."""
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not (step_text.isascii() and step_text.isdigit() and int(step_text) > 0):
                raise ValueError(f"cron {expr!r}: bad step {step_text!r}")
            step = int(step_text)
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            a, _, b = span.partition("-")
            # 7 is Sunday too, at either end of a range: 5-7 is Friday to Sunday, 7-7 Sunday.
            first = 7 if a.strip() == "7" else _day(a, expr)
            last = 7 if b.strip() == "7" else _day(b, expr)
            if first > last:
                raise ValueError(f"cron {expr!r}: the range {span!r} runs backwards")
        else:
            first = _day(span, expr)
            last = 6 if step_text else first
        days.update(d % 7 for d in range(first, last + 1, step))
    if days == set(range(7)):
        return "*"
    return ",".join(_DAYS[d] for d in sorted(days))


def cron_trigger(expr: str, tz: ZoneInfo | Any = UTC) -> CronTrigger:
    """A trigger for a standard 5-field cron expression; ValueError with the reason."""
    if not expr.isascii():
        raise ValueError(f"cron {expr!r}: write it in ASCII (digits 0-9, names like MON)")
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {expr!r} must have 5 fields (minute hour day-of-month month day-of-week)"
        )
    minute, hour, day, month, weekday = fields
    if day != "*" and weekday != "*":
        # cron runs when either matches; APScheduler when both do: refuse the ambiguity.
        raise ValueError(
            f"cron {expr!r}: restrict the day of the month or the day of the week, not both"
        )
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_weekdays(weekday, expr),
            timezone=tz,
        )
    except ValueError as exc:
        if str(exc).startswith("cron "):
            raise
        raise ValueError(f"cron {expr!r}: {exc}") from None


def check_cron(expr: str) -> None:
    """ValueError with the reason when `expr` is not a standard 5-field cron expression, or
    names only dates that never come (30 February)."""
    if cron_trigger(expr).get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ValueError(f"cron {expr!r} never fires: no such date comes")


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)"
        ) from exc
