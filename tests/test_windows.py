"""Maintenance windows: membership at the edges, in two time zones and across daylight saving;
standard cron; check-config's lines; where a request fell, on its record and its card."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.cli import main
from bot.domain.windows import Window, check_cron, place
from bot.policy import PolicyError, parse_policy
from bot.sandbox.stack import APPROVER, APPROVER_2, POLICY, start_bot
from bot.slack.ids import ActionId
from tests.helpers import click, current, request_access, request_id_of, request_row

BERLIN = Window("weekly-patching", "0 2 * * SUN", timedelta(hours=4), "Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "start"),
    [
        # Sunday 22 November 2026, winter time (UTC+1): 02:00 local is 01:00 UTC.
        ("2026-11-22T00:59:59", None),
        ("2026-11-22T01:00:00", "2026-11-22T01:00:00"),  # the start is inside
        ("2026-11-22T04:59:59.999999", "2026-11-22T01:00:00"),
        ("2026-11-22T05:00:00", None),  # the end is not
        ("2026-11-21T01:00:00", None),  # a Saturday
        # Summer time (UTC+2): 02:00 local is 00:00 UTC.
        ("2026-07-05T00:00:00", "2026-07-05T00:00:00"),
        ("2026-07-05T03:59:00", "2026-07-05T00:00:00"),
        ("2026-07-05T04:00:00", None),
        # 29 March 2026: clocks jump from 02:00 to 03:00; the window opens at 03:00 local.
        ("2026-03-29T00:59:00", None),
        ("2026-03-29T01:00:00", "2026-03-29T01:00:00"),
        ("2026-03-29T04:59:00", "2026-03-29T01:00:00"),
        # 25 October 2026: 02:00 local happens twice; the window opens at the first.
        ("2026-10-25T00:00:00", "2026-10-25T00:00:00"),
        ("2026-10-25T03:59:00", "2026-10-25T00:00:00"),
        ("2026-10-25T04:00:00", None),
    ],
)
def test_window_membership_at_its_edges_and_across_daylight_saving(at, start):
    assert BERLIN.start_of(utc(at)) == (utc(start) if start else None)


def test_the_same_window_in_two_time_zones():
    new_york = Window("nightly", "0 22 * * *", timedelta(hours=2), "America/New_York")
    tokyo = Window("nightly", "0 22 * * *", timedelta(hours=2), "Asia/Tokyo")
    at = utc("2026-11-23T03:30:00")  # 22:30 in New York (UTC-5), 12:30 in Tokyo
    assert new_york.start_of(at) == utc("2026-11-23T03:00:00")
    assert tokyo.start_of(at) is None
    assert tokyo.start_of(utc("2026-11-23T13:59:00")) == utc("2026-11-23T13:00:00")


def test_placement_names_the_window_and_says_when_none_applies():
    db_only = Window("db", "0 2 * * *", timedelta(hours=1), "UTC", frozenset({"prod-db"}))
    inside, outside = utc("2026-11-23T02:30:00"), utc("2026-11-23T03:30:00")
    assert place([db_only], "prod-db", inside).window == "db"
    assert place([db_only], "prod-db", inside).outside is False
    assert place([db_only], "prod-db", outside).outside is True
    assert place([db_only], "other", inside).outside is None  # no window applies: no flag
    assert place([], "prod-db", inside).outside is None


@pytest.mark.parametrize(
    ("cron", "weekday"),
    [("0 2 * * 0", "Sun"), ("0 2 * * 7", "Sun"), ("0 2 * * 5", "Fri"), ("0 2 * * 1-5", "Mon")],
)
def test_standard_cron_numbers_sunday_zero_and_seven(cron, weekday):
    w = Window("w", cron, timedelta(hours=1), "UTC")
    start = w.starts_between(utc("2026-11-22T03:00:00"), utc("2026-12-01T00:00:00"))[0]
    assert start.strftime("%a") == weekday  # 22 Nov 2026 is a Sunday: the next one is later


@pytest.mark.parametrize(
    ("cron", "says"),
    [
        ("0 2 * *", "must have 5 fields"),
        ("0 25 * * *", "higher than the maximum"),
        ("0 2 * * 8", "is not a day of the week"),
        ("0 2 1 * MON", "not both"),
    ],
)
def test_bad_cron_is_named(cron, says):
    with pytest.raises(ValueError, match=says):
        check_cron(cron)


WINDOWS = """\
maintenance_windows:
  - name: weekly-patching
    cron: "0 2 * * SUN"
    duration: 4h
    timezone: Europe/Berlin
    resources: [prod-db]
"""


def test_check_config_names_a_bad_cron_duration_and_time_zone_with_their_lines(
    tmp_path, capsys, monkeypatch
):
    broken = POLICY + WINDOWS.replace("0 2 * * SUN", "0 2 * * SUNDAY").replace(
        "4h", "4 hours"
    ).replace("Europe/Berlin", "Europe/Berlinn").replace("[prod-db]", "[prod-dbb]")
    policy = tmp_path / "breakglass.yml"
    policy.write_text(broken)
    monkeypatch.setenv("BREAKGLASS_CONFIG", str(policy))
    assert main(["check-config"]) == 1
    err = capsys.readouterr().err
    lines = broken.splitlines()

    def line_of(text: str) -> int:
        return next(i for i, ln in enumerate(lines, 1) if text in ln)

    assert f"{policy}:{line_of('SUNDAY')}: maintenance_windows.0.cron:" in err
    assert f"{policy}:{line_of('4 hours')}: maintenance_windows.0.duration:" in err
    assert (
        f"{policy}:{line_of('Berlinn')}: maintenance_windows.0.timezone: unknown time zone" in err
    )
    assert "Traceback" not in err


def test_check_config_names_a_window_for_a_resource_that_does_not_exist():
    with pytest.raises(PolicyError) as failed:
        parse_policy(POLICY + WINDOWS.replace("[prod-db]", "[prod-dbb]"), "bg.yml")
    assert "maintenance_windows.0.resources.0: no resource named 'prod-dbb'" in str(failed.value)


OUTSIDE_TWO = POLICY.replace(
    "    approvals: 1\n", "    approvals: 1\n    outside_window_approvals: 2\n"
) + WINDOWS.replace('cron: "0 2 * * SUN"', 'cron: "0 2 * * *"').replace("Europe/Berlin", "UTC")


def test_a_request_outside_every_window_is_flagged_and_needs_more_approvals(
    backends, slack, clock, database_url, tmp_path
):
    bot = start_bot(
        backends, slack, database_url, clock=clock, workdir=tmp_path, policy_text=OUTSIDE_TWO
    )
    try:
        clock.now = utc("2026-11-23T09:00:00")  # the window is 02:00 to 06:00 UTC daily
        parent = request_access(bot, slack)
        rid = request_id_of(parent)
        row = request_row(bot, rid)
        assert row.outside_window is True and row.window is None
        card = str(parent.blocks)
        assert "outside every maintenance window" in card  # a flag, with its reason
        assert "*Approvals:* 2 outside maintenance windows (1 inside)" in card
        click(bot, APPROVER, parent, ActionId.APPROVE)
        assert request_row(bot, rid).state == "pending", "one approval is not enough outside"
        assert "1 of 2 approvals" in str(current(slack, parent).blocks)
        click(bot, APPROVER_2, parent, ActionId.APPROVE)
        assert request_row(bot, rid).state == "active"
    finally:
        bot.stop()


def test_a_request_inside_a_window_records_it_and_needs_the_usual_approvals(
    backends, slack, clock, database_url, tmp_path
):
    bot = start_bot(
        backends, slack, database_url, clock=clock, workdir=tmp_path, policy_text=OUTSIDE_TWO
    )
    try:
        clock.now = utc("2026-11-23T03:00:00")
        parent = request_access(bot, slack)
        rid = request_id_of(parent)
        row = request_row(bot, rid)
        assert row.outside_window is False and row.window == "weekly-patching"
        assert "Maintenance window:* weekly-patching" in str(parent.blocks)
        click(bot, APPROVER, parent, ActionId.APPROVE)
        assert request_row(bot, rid).state == "active"
        # The other resource has no window: no flag, nothing recorded.
        other = request_access(bot, slack, resource="prod-db-two-keys")
        assert request_row(bot, request_id_of(other)).outside_window is None
        assert "maintenance window" not in str(other.blocks).lower()
    finally:
        bot.stop()
