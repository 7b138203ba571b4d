"""The weekly digest as Slack mrkdwn (also what `breakglass digest --out` writes)."""

from __future__ import annotations

from bot.slack.format import escape, escape_clip, mention, slack_date
from bot.slack.stats import seconds_text, share_text
from bot.usecases.digest import Digest
from bot.usecases.stats import Metrics

# A message's text holds 40,000 characters; a digest stays far below, lists are cut.
LIST_AT_MOST = 15


def _num(value: float | None, unit: str = "") -> str:
    if unit == "s":
        return seconds_text(value)
    if unit == "%":
        return "n/a" if value is None else share_text(value)
    return "n/a" if value is None else f"{value:g}"


def _change(now: float | None, before: float | None) -> str:
    if now is None or before is None or now == before:
        return ""
    return " ▲" if now > before else " ▼"


ROWS: list[tuple[str, str, str]] = [
    ("events", "Grants made", ""),
    ("emergency", "Emergency (no approval)", ""),
    ("requests", "Requests", ""),
    ("unique_users", "People", ""),
    ("mean_time_between_events_seconds", "Mean time between events", "s"),
    ("outside_window_share", "Outside maintenance windows", "%"),
    ("median_time_to_approve_seconds", "Median time to approve", "s"),
    ("median_session_seconds", "Median session", "s"),
]


def _metric(m: Metrics, key: str) -> float | None:
    return m.emergency if key == "emergency" else getattr(m, key)


def digest_text(d: Digest) -> str:
    """The digest: figures against the week before, per resource, flags, reviews, the chain."""
    start, end = d.period.start, d.period.end
    lines = [
        f"*Break-glass digest* {slack_date(start)} to {slack_date(end)}",
        "",
        "*The last 7 days* (the 7 before in brackets)",
    ]
    for key, label, unit in ROWS:
        now, before = _metric(d.now.overall, key), _metric(d.before.overall, key)
        change = _change(now, before)
        lines.append(f"• {label}: *{_num(now, unit)}* ({_num(before, unit)}){change}")
    outcomes = d.now.overall.outcomes
    lines.append(
        "• Outcomes: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in outcomes.items() if v)
        if any(outcomes.values())
        else "• Outcomes: no requests"
    )
    if d.now.resources:
        lines += ["", "*Per resource*"]
        for name, m in sorted(d.now.resources.items(), key=lambda kv: -kv[1].events):
            share = share_text(m.outside_window_share)
            lines.append(
                f"• `{escape(name)}`: {m.events} grant(s), {m.emergency} emergency, "
                f"{m.unique_users} people, outside windows {share}"
            )
    lines += ["", f"*Flagged requests* ({len(d.flagged)})"]
    for f in d.flagged[:LIST_AT_MOST]:
        reasons = "; ".join(escape_clip(r, 160) for r in f.reasons)
        lines.append(
            f"• #{f.request_id} `{escape(f.resource)}` by {mention(f.requester)}: {reasons}"
        )
    if len(d.flagged) > LIST_AT_MOST:
        lines.append(f"• and {len(d.flagged) - LIST_AT_MOST} more")
    o = d.now.overall
    lines += [
        "",
        f"*Reviews*: {o.reviews_open} open, {o.reviews_overdue} overdue; closed this week: "
        + (
            ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in o.review_outcomes.items() if v)
            or "none"
        ),
    ]
    for r in d.overdue[:LIST_AT_MOST]:
        lines.append(
            f"• overdue: #{r.request_id} `{escape(r.resource)}` by {mention(r.requester)}, "
            f"due {slack_date(r.due_at)}"
        )
    chain = (
        f"intact, {d.chain_checked} events"
        if d.chain_ok
        else f":rotating_light: BROKEN: {escape_clip(d.chain_problem, 300)}"
    )
    lines += [
        "",
        f"*Audit chain*: {chain}; head #{d.head_seq} `{d.head_hash}`. Its anchor "
        "(`breakglass audit verify --anchors FILE` reads it wherever it is kept):",
        f"`{d.anchor}`" if d.anchor else "",
    ]
    return "\n".join(lines)
