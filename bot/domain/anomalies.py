"""Anomaly flags: what is unusual about a request, each with its reason, decided from the
person's own history when the request is filed. Plain text, for the card, the digest and
the audit trail alike."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# "More than usual": at least this many events in the last 30 days, and more than twice the
# person's own rate over the eleven months before.
RATE_WINDOW = timedelta(days=30)
RATE_BASELINE = timedelta(days=330)
RATE_AT_LEAST = 3
# An hour never asked at is unusual only for someone with a history of asking.
HOURS_AFTER = 5
EMERGENCY_AGAIN_WITHIN = timedelta(hours=24)


@dataclass(frozen=True)
class Past:
    """One earlier request of the same person."""

    resource: str
    created_at: datetime
    emergency: bool
    granted: bool  # access was issued for it


@dataclass(frozen=True)
class Flag:
    kind: str  # first_access | unusual_rate | unusual_hour | outside_window | repeat_emergency
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "reason": self.reason}


def reasons(recorded: str | None) -> list[str]:
    """The reasons of flags as recorded on a request (JSON), for display; [] when none or
    unreadable."""
    try:
        return [str(f["reason"]) for f in json.loads(recorded or "[]")]
    except (ValueError, TypeError, KeyError):
        return []


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def flags_for(
    *,
    resource: str,
    at: datetime,
    emergency: bool,
    outside_window: bool | None,
    history: Sequence[Past],
) -> list[Flag]:
    """The flags a new request raises, given the person's earlier requests (any order)."""
    found: list[Flag] = []
    granted = [p for p in history if p.granted]
    if not any(p.resource == resource for p in granted):
        found.append(Flag("first_access", f"first access to {resource} by this person"))

    recent = sum(1 for p in granted if at - RATE_WINDOW <= p.created_at < at) + 1
    before = sum(
        1 for p in granted if at - RATE_WINDOW - RATE_BASELINE <= p.created_at < at - RATE_WINDOW
    )
    usual = before / (RATE_BASELINE / RATE_WINDOW)
    if recent >= RATE_AT_LEAST and recent > 2 * usual:
        found.append(
            Flag(
                "unusual_rate",
                f"{_ordinal(recent)} break-glass request in 30 days; "
                f"usually {usual:.1f} per 30 days",
            )
        )

    hours = {p.created_at.hour for p in history}
    if len(history) >= HOURS_AFTER and at.hour not in hours:
        found.append(
            Flag("unusual_hour", f"never asked before at {at.hour:02d}:00-{at.hour:02d}:59 UTC")
        )

    if outside_window:
        found.append(Flag("outside_window", "outside every maintenance window"))

    if emergency:
        last = max(
            (
                p.created_at
                for p in history
                if p.emergency and p.created_at > at - EMERGENCY_AGAIN_WITHIN
            ),
            default=None,
        )
        if last is not None:
            hours_ago = (at - last).total_seconds() / 3600
            found.append(
                Flag(
                    "repeat_emergency",
                    f"another emergency by this person {hours_ago:.0f} h ago",
                )
            )
    return found
