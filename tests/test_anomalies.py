"""Anomaly flags from seeded histories: each raised with its reason, and only then; recorded
on the request and shown on its card."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from bot.domain.anomalies import Past, flags_for
from bot.sandbox.stack import REQUESTER
from bot.store import AccessRequest, Grant
from tests.helpers import request_access, request_id_of, request_row

NOW = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)


def kinds(**kw) -> dict[str, str]:
    base = {"resource": "prod-db", "at": NOW, "emergency": False, "outside_window": None}
    return {f.kind: f.reason for f in flags_for(**(base | kw))}


def granted(days_ago: float, resource: str = "prod-db", hour: int = 14, emergency=False) -> Past:
    at = (NOW - timedelta(days=days_ago)).replace(hour=hour)
    return Past(resource, at, emergency, granted=True)


def test_a_first_access_is_flagged_and_a_second_is_not():
    assert kinds(history=[]) == {"first_access": "first access to prod-db by this person"}
    assert "first_access" in kinds(history=[granted(3, resource="other-db")])
    # Asked before but never granted (denied, timed out): still a first access.
    assert "first_access" in kinds(history=[Past("prod-db", NOW - timedelta(days=3), False, False)])
    assert kinds(history=[granted(3)]) == {}


def test_more_events_than_the_persons_usual_rate():
    # Two in the last 30 days plus this one: the 3rd; none in the 11 months before.
    flags = kinds(history=[granted(2), granted(10)])
    assert flags["unusual_rate"] == "3rd break-glass request in 30 days; usually 0.0 per 30 days"
    # Someone who breaks the glass about 3 times a month: 3 is their usual, not flagged.
    steady = [granted(40 + 10 * i) for i in range(33)] + [granted(2), granted(10)]
    assert "unusual_rate" not in kinds(history=steady)
    # Only two in 30 days: below the floor of 3, whatever the usual rate.
    assert "unusual_rate" not in kinds(history=[granted(2)])


def test_an_hour_never_asked_at_is_flagged_once_there_is_a_history():
    mornings = [granted(d, hour=9) for d in range(40, 45)]
    assert kinds(history=mornings)["unusual_hour"] == "never asked before at 14:00-14:59 UTC"
    assert "unusual_hour" not in kinds(history=mornings[:4])  # too little history to say
    assert "unusual_hour" not in kinds(history=[*mornings, granted(50, hour=14)])


def test_outside_windows_and_a_repeated_emergency():
    assert kinds(history=[granted(3)], outside_window=True) == {
        "outside_window": "outside every maintenance window"
    }
    assert "outside_window" not in kinds(history=[granted(3)], outside_window=False)
    earlier = Past("other-db", NOW - timedelta(hours=5), True, True)
    flags = kinds(history=[granted(3), earlier], emergency=True)
    assert flags["repeat_emergency"] == "another emergency by this person 5 h ago"
    old = Past("other-db", NOW - timedelta(hours=25), True, True)
    assert "repeat_emergency" not in kinds(history=[granted(3), old], emergency=True)
    assert "repeat_emergency" not in kinds(history=[granted(3), earlier], emergency=False)


def test_flags_are_recorded_and_shown_on_the_card(bot, slack, clock):
    # A year of history for this person, seeded in the database: three grants of prod-db this
    # month, all at 09:00 UTC.
    clock.now = NOW
    with bot.runtime.store.transaction() as s:
        for days in (3, 9, 20, 60, 90):
            at = (NOW - timedelta(days=days)).replace(hour=9, minute=0)
            req = AccessRequest(
                requester=REQUESTER,
                resource="prod-db",
                duration_seconds=900,
                justification="earlier",
                state="expired",
                created_at=at,
                updated_at=at,
            )
            s.add(req)
            s.flush()
            s.add(
                Grant(
                    request_id=req.id,
                    provider="vault-database",
                    token_accessor=f"gone-{days}",
                    issued_at=at,
                    expires_at=at + timedelta(minutes=15),
                    ended_at=at + timedelta(minutes=15),
                )
            )
    parent = request_access(bot, slack)
    row = request_row(bot, request_id_of(parent))
    recorded = {f["kind"] for f in json.loads(row.flags)}
    assert recorded == {"unusual_rate", "unusual_hour"}
    card = str(parent.blocks)
    assert "4th break-glass request in 30 days; usually 0.2 per 30 days" in card
    assert "never asked before at 14:00-14:59 UTC" in card
