"""Parsing and printing of durations ("30m", "1h30m" in; "1 h 30 min" out), in one place."""

from __future__ import annotations

import re
from datetime import timedelta

# ASCII digits only ("²".isdigit() is true, int("²") fails), and few enough for int().
_PART = re.compile(r"([0-9]{1,12})\s*(d|h|m|s)", re.IGNORECASE | re.ASCII)
_WHOLE = re.compile(r"^\s*(?:[0-9]{1,12}\s*[dhms]\s*)+$", re.IGNORECASE | re.ASCII)
_MINUTES = re.compile(r"[0-9]{1,12}", re.ASCII)
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# No break-glass grant lasts a year; larger numbers are typos (and overflow timedelta).
LONGEST = timedelta(days=366)


class DurationError(ValueError):
    """A duration that cannot be read; the message says what is accepted."""


def parse_duration(text: str | int | timedelta, *, longest: timedelta = LONGEST) -> timedelta:
    """Read "45s", "30m", "2h", "1d" or combinations like "1h30m"; a bare number is minutes.
    `longest` bounds it: a grant's default; a reporting period may look further back."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int) and not isinstance(text, bool):
        seconds = text * 60
    else:
        raw = str(text).strip()
        if len(raw) > 40:
            raise DurationError(f"{raw[:20]!r}… is not a duration; write it like 30m, 1h or 1h30m")
        if _MINUTES.fullmatch(raw):
            seconds = int(raw) * 60
        elif _WHOLE.match(raw):
            seconds = sum(int(n) * _UNITS[u.lower()] for n, u in _PART.findall(raw))
        else:
            raise DurationError(f"{str(text)!r} is not a duration; write it like 30m, 1h or 1h30m")
    if seconds > longest.total_seconds():
        raise DurationError(f"{str(text)!r} is longer than {longest.days} days")
    value = timedelta(seconds=seconds)
    if value <= timedelta(0):
        raise DurationError("a duration must be longer than zero")
    return value


def format_duration(value: timedelta) -> str:
    """Print for people: "45 s", "30 min", "1 h 15 min", "2 d 3 h"."""
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = []
    if days:
        parts.append(f"{days} d")
    if hours:
        parts.append(f"{hours} h")
    if minutes:
        parts.append(f"{minutes} min")
    return " ".join(parts)


def vault_ttl(value: timedelta) -> str:
    """A TTL string Vault accepts: whole seconds."""
    return f"{int(value.total_seconds())}s"
