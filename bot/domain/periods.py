"""Reading the bounds of a reporting period ("30d" ago, "2024-03-01", an ISO datetime), in one
place for the CLI and Slack: pure, the current time is handed in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.domain.durations import DurationError, parse_duration

# Ten years back is as far as any question about break-glass use goes; longer is a typo.
FURTHEST = timedelta(days=3660)
# A duration ago needs its unit: "30" alone could be minutes, days or a year.
_HAS_UNIT = re.compile(r"^\s*(?:[0-9]{1,12}\s*[dhms]\s*)+$", re.IGNORECASE | re.ASCII)
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", re.ASCII)
_ISO_DATETIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.+\-Z]+$", re.ASCII)
ACCEPTED = "write a duration ago like 7d, 12h or 1d12h, or an ISO date like 2024-03-01"


class PeriodError(ValueError):
    """A period bound that cannot be read; the message says what is accepted."""


@dataclass(frozen=True)
class Period:
    """[start, end): start included, end excluded, both timezone-aware UTC."""

    start: datetime
    end: datetime


def parse_bound(text: str, now: datetime) -> datetime:
    """A moment: `text` ago ("30d", "12h") or an ISO date/datetime (a date is midnight UTC; a
    datetime without an offset is UTC)."""
    raw = str(text).strip()
    if len(raw) > 40:
        raise PeriodError(f"{raw[:20]!r}… is not a time; {ACCEPTED}")
    if _HAS_UNIT.match(raw):
        try:
            return now - parse_duration(raw, longest=FURTHEST)
        except DurationError as exc:
            raise PeriodError(f"{exc}; {ACCEPTED}") from None
    if _ISO_DATE.match(raw) or _ISO_DATETIME.match(raw):
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
            far = abs(now - when) > FURTHEST
        except (ValueError, OverflowError):  # 0001-01-01T00:00+01:00 is before year 1 in UTC
            raise PeriodError(f"{raw!r} is not a valid date or time; {ACCEPTED}") from None
        if far:
            raise PeriodError(f"{raw!r} is more than {FURTHEST.days} days away")
        return when
    raise PeriodError(f"{raw!r} is not a time; {ACCEPTED}")


def parse_period(since: str | None, until: str | None, now: datetime, default: str) -> Period:
    """The period from `since` (`default` when not given) to `until` (now when not given)."""
    end = parse_bound(until, now) if until else now
    start = parse_bound(since or default, now)
    if start >= end:
        raise PeriodError(
            f"the period starts ({start.isoformat(timespec='seconds')}) at or after it ends "
            f"({end.isoformat(timespec='seconds')})"
        )
    return Period(start, end)
