"""`/breakglass stats`: the break-glass metrics of a period, as a private reply in mrkdwn."""

from __future__ import annotations

from datetime import timedelta

from bot.domain.durations import format_duration
from bot.slack.format import escape, slack_date
from bot.usecases.stats import Metrics, Report

MAX_RESOURCES = 20  # a reply stays readable; the CLI and /metrics have them all


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return format_duration(timedelta(seconds=round(seconds)))


def share_text(value: float | None) -> str:
    return "n/a (no window applies)" if value is None else f"{value:.0%}"


def metrics_lines(m: Metrics) -> list[str]:
    """The figures of one resource (or all), a few short lines."""
    o = m.outcomes
    decided = ", ".join(
        f"{n} {label}"
        for label, n in (
            ("approved", o["approved"]),
            ("emergency", o["emergency"]),
            ("denied", o["denied"]),
            ("timed out", o["timed_out"]),
            ("cancelled", o["cancelled"]),
            ("failed", o["failed"]),
            ("open", o["open"]),
        )
        if n
    )
    reviewed = ", ".join(
        f"{n} {k.replace('_', ' ')}" for k, n in sorted(m.review_outcomes.items()) if n
    )
    return [
        f"*{m.events}* grants made to {m.unique_users} people; {m.requests} requests"
        + (f" ({decided})" if decided else ""),
        f"Between grants: {seconds_text(m.mean_time_between_events_seconds)} on average · outside "
        f"maintenance windows: {share_text(m.outside_window_share)}",
        f"Median time to approve: {seconds_text(m.median_time_to_approve_seconds)} · median "
        f"session: {seconds_text(m.median_session_seconds)}",
        f"Reviews open now: {m.reviews_open} ({m.reviews_overdue} overdue)"
        + (f" · reviewed in the period: {reviewed}" if reviewed else ""),
    ]


def stats_text(report: Report) -> str:
    """The whole reply: the period, overall, then each resource (busiest first)."""
    p = report.period
    head = f"*Break-glass metrics* from {slack_date(p.start)} to {slack_date(p.end)}"
    parts = [head, "\n".join(metrics_lines(report.overall))]
    busiest = sorted(report.resources.items(), key=lambda kv: (-kv[1].events, kv[0]))
    for name, m in busiest[:MAX_RESOURCES]:
        parts.append(f"`{escape(name)}`\n" + "\n".join(metrics_lines(m)))
    if len(busiest) > MAX_RESOURCES:
        parts.append(
            f"…and {len(busiest) - MAX_RESOURCES} more resources: `breakglass stats` has them all."
        )
    return "\n\n".join(parts)
