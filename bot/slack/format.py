"""Formatting shared by every subject: escaping, dates, mentions, confirm buttons."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from slack_sdk.models.blocks import (
    ButtonElement,
    ConfirmObject,
)

from bot.slack.ids import ActionId

SECTION_LIMIT = 3000


def escape(text: str | None) -> str:
    """User text for mrkdwn: no accidental mentions, links or <!channel>."""
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_clip(text: str | None, limit: int) -> str:
    """Escaped user text of at most `limit` characters, never cutting an entity in two."""
    out: list[str] = []
    size = 0
    for ch in text or "":
        piece = escape(ch)
        if size + len(piece) > limit - 1:
            return "".join(out) + "…"
        out.append(piece)
        size += len(piece)
    return "".join(out)


_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,4}$")


def clip_mrkdwn(text: str, limit: int) -> str:
    """Rendered mrkdwn of at most `limit` characters; a cut says so ("…") and never splits an
    entity such as `&lt;`."""
    if len(text) <= limit:
        return text
    return _PARTIAL_ENTITY.sub("", text[: limit - 1]) + "…"


def slack_date(when: datetime) -> str:
    """Slack's date token: each reader sees their own time zone."""
    fallback = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def mention(user: str) -> str:
    return f"<@{user}>"


def confirmed_button(
    action: ActionId, text: str, style: str, value: str, title: str, question: str
) -> ButtonElement:
    """A button for something irreversible: Slack asks before sending the click."""
    return ButtonElement(
        action_id=action,
        text=text,
        style=style,
        value=value,
        confirm=ConfirmObject(title=title, text=question, confirm=text, deny="Back"),
    )
