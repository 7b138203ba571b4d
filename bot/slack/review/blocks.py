"""Block Kit for reviews: the Review button, the review modal, the review's line on the card,
and the list `/breakglass reviews` answers with."""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    InputBlock,
    Option,
    PlainTextInputElement,
    RadioButtonsElement,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.domain.durations import format_duration
from bot.domain.reviews import MAX_NOTES, Outcome
from bot.slack.format import SECTION_LIMIT, escape, escape_clip, mention, slack_date
from bot.slack.ids import ActionId, BlockId, ViewId
from bot.usecases.ports import Card
from bot.usecases.reviews import ReviewItem

LISTED_AT_MOST = 20  # a message holds 50 blocks; the rest is counted, not shown


def review_button(request_id: int) -> ActionsBlock:
    """The button that opens the review modal; its value is only the request id."""
    return ActionsBlock(
        block_id=BlockId.REVIEW_ACTIONS,
        elements=[
            ButtonElement(
                action_id=ActionId.REVIEW, text="Review", style="primary", value=str(request_id)
            )
        ],
    )


def review_state(card: Card) -> str | None:
    """The review's part of the status card: owed, overdue, or closed and how."""
    review = card.review
    if review is None:
        return "*review required*" if card.request.review_required else None
    if review.reviewed_at is not None:
        outcome = Outcome(review.outcome) if review.outcome in set(Outcome) else None
        label = outcome.label.lower() if outcome else escape(review.outcome)
        flag = "" if outcome == Outcome.LEGITIMATE else ":warning: "
        return f"{flag}reviewed by {mention(review.reviewer or '')}: {label}"
    if review.reminded_at is not None:
        return f":warning: *review overdue* (was due {slack_date(review.due_at)})"
    return f"*review owed* (due {slack_date(review.due_at)})"


def review_modal(card: Card) -> View:
    req = card.request
    how = "emergency access, granted without approval" if req.emergency else "approved access"
    summary = (
        f"*Request #{req.id}*: {mention(req.requester)} had `{escape(req.resource)}` for "
        f"{format_duration(card.duration)} ({how}).\n*Why:* "
    )
    summary += escape_clip(req.justification, SECTION_LIMIT - len(summary))
    return View(
        type="modal",
        callback_id=ViewId.REVIEW,
        title=f"Review #{req.id}"[:24],
        submit="Close review",
        close="Back",
        private_metadata=json.dumps({"request_id": req.id}),
        blocks=[
            SectionBlock(text=summary),
            InputBlock(
                block_id=BlockId.REVIEW_OUTCOME,
                label="Outcome",
                element=RadioButtonsElement(
                    action_id=ActionId.REVIEW_OUTCOME,
                    options=[Option(value=o.value, text=o.label) for o in Outcome],
                ),
            ),
            InputBlock(
                block_id=BlockId.REVIEW_NOTES,
                label="Notes",
                optional=True,
                hint="Required unless the access was legitimate. Recorded in the audit log.",
                element=PlainTextInputElement(
                    action_id=ActionId.REVIEW_NOTES, multiline=True, max_length=MAX_NOTES
                ),
            ),
        ],
    )


def read_review_form(view: object) -> dict[str, Any]:
    """The submitted review modal: request id (from its metadata), outcome, notes; odd
    shapes read as empty fields (the checks say what is missing)."""
    view = view if isinstance(view, dict) else {}
    state = view.get("state")
    values = state.get("values") if isinstance(state, dict) else None
    values = values if isinstance(values, dict) else {}

    def field(block: BlockId, action: ActionId) -> dict[str, Any]:
        found = values.get(block)
        found = found.get(action) if isinstance(found, dict) else None
        return found if isinstance(found, dict) else {}

    selected = field(BlockId.REVIEW_OUTCOME, ActionId.REVIEW_OUTCOME).get("selected_option")
    outcome = selected.get("value") if isinstance(selected, dict) else None
    notes = field(BlockId.REVIEW_NOTES, ActionId.REVIEW_NOTES).get("value")
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
    except (TypeError, ValueError):
        meta = {}
    return {
        "request_id": meta.get("request_id") if isinstance(meta, dict) else None,
        "outcome": outcome if isinstance(outcome, str) else None,
        "notes": notes if isinstance(notes, str) else None,
    }


def review_list(items: list[ReviewItem]) -> tuple[str, list[dict[str, Any]]]:
    """The reviews a person can close, overdue first, each with its Review button."""
    if not items:
        text = "No review is waiting for you."
        return text, [SectionBlock(text=text).to_dict()]
    overdue = sum(1 for i in items if i.overdue)
    head = f"*Reviews you can do: {len(items)}*" + (f" ({overdue} overdue)" if overdue else "")
    blocks: list[Any] = [SectionBlock(text=head)]
    lines = [head]
    for item in items[:LISTED_AT_MOST]:
        when = (
            f":warning: *overdue* (was due {slack_date(item.due_at)})"
            if item.overdue
            else f"due {slack_date(item.due_at)}"
        )
        line = f"#{item.request_id} `{escape(item.resource)}` by {mention(item.requester)}: {when}"
        lines.append(line)
        blocks.append(
            SectionBlock(
                text=line,
                accessory=ButtonElement(
                    action_id=ActionId.REVIEW, text="Review", value=str(item.request_id)
                ),
            )
        )
    more = len(items) - LISTED_AT_MOST
    if more > 0:
        lines.append(f"…and {more} more.")
        blocks.append(SectionBlock(text=f"…and {more} more."))
    return "\n".join(lines), [b.to_dict() for b in blocks]
