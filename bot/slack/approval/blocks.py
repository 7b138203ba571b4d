"""Block Kit for the security channel: the status card, its thread, the deny modal."""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.domain.durations import format_duration
from bot.domain.reviews import Outcome
from bot.domain.workflow import Event, State, describe_state
from bot.slack.format import (
    SECTION_LIMIT,
    clip_mrkdwn,
    confirmed_button,
    escape,
    escape_clip,
    mention,
    slack_date,
)
from bot.slack.ids import ActionId, BlockId, ViewId
from bot.slack.review.blocks import review_button, review_state
from bot.usecases.ports import Card

STATE_BADGE = {
    State.PENDING: ":hourglass_flowing_sand: Waiting for approval",
    State.APPROVED: ":white_check_mark: Approved, issuing",
    State.ACTIVE: ":unlock: Active",
    State.ENDING: ":hourglass: Revocation pending",
    State.DENIED: ":no_entry: Denied",
    State.TIMED_OUT: ":alarm_clock: Timed out",
    State.CANCELLED: ":heavy_multiplication_x: Cancelled",
    State.EXPIRED: ":lock: Ended (expired)",
    State.REVOKED: ":lock: Ended (revoked)",
    State.FAILED: ":x: Failed to issue",
}


def deny_modal(request_id: int) -> View:
    return View(
        type="modal",
        callback_id=ViewId.DENY,
        title=f"Deny request #{request_id}"[:24],
        submit="Deny",
        close="Back",
        private_metadata=json.dumps({"request_id": request_id}),
        blocks=[
            InputBlock(
                block_id=BlockId.DENY_REASON,
                label="Reason (the requester sees it)",
                element=PlainTextInputElement(
                    action_id=ActionId.DENY_REASON, multiline=True, max_length=1000
                ),
            )
        ],
    )


def request_summary(card: Card) -> str:
    req = card.request
    ticket = f"\n*Ticket:* {escape_clip(req.ticket, 400)}" if req.ticket else ""
    head = (
        f"*Requester:* {mention(req.requester)}\n"
        f"*Resource:* `{escape(req.resource)}`, {escape_clip(card.resource.description, 300)}\n"
        f"*Duration:* {format_duration(card.duration)}{ticket}\n"
        f"{window_line(card)}"
        "*Why:* "
    )
    # A section holds 3000 characters; escaping can make a long justification longer.
    return head + escape_clip(req.justification, SECTION_LIMIT - len(head))


def window_line(card: Card) -> str:
    """The maintenance window the request was made in, or what being outside costs; and the
    anomaly flags, each with its reason (nothing when there is nothing to say)."""
    req = card.request
    out = ""
    if req.window:
        out += f"*Maintenance window:* {escape_clip(req.window, 64)}\n"
    elif req.outside_window and card.needed > card.resource.approvals:
        out += (
            f"*Approvals:* {card.needed} outside maintenance windows "
            f"({card.resource.approvals} inside)\n"
        )
    if card.flags:
        reasons = " · ".join(escape_clip(r, 200) for r in card.flags[:6])
        out += f":triangular_flag_on_post: *Flags:* {reasons}\n"
    return out


def status_line(card: Card) -> str:
    req, state = card.request, card.state
    parts = [STATE_BADGE[state]]
    if state == State.PENDING:
        parts.append(f"{len(set(card.approvals))} of {card.needed} approvals")
        if card.approvers:
            named = " ".join(mention(u) for u in card.approvers[:20])
            more = len(card.approvers) - 20
            parts.append("approvers: " + named + (f" and {more} more" if more > 0 else ""))
    if card.approvals and state != State.PENDING and not req.emergency:
        parts.append("approved by " + ", ".join(mention(u) for u in dict.fromkeys(card.approvals)))
    if state == State.DENIED and card.denied_by:
        parts.append(f"by {mention(card.denied_by)}: {escape_clip(card.deny_reason, 600)}")
    if card.grant and state == State.ACTIVE:
        parts.append(f"`{escape(card.grant.identity)}` until {slack_date(card.grant.expires_at)}")
    if card.grant and state == State.ENDING and card.grant.revoke_failing_since:
        parts.append(
            f"Vault unreachable since {slack_date(card.grant.revoke_failing_since)}; retrying"
        )
    if card.grant and card.grant.ended_at:
        parts.append(f"ended {slack_date(card.grant.ended_at)}")
    review = review_state(card)
    if review:
        parts.append(review)
    return " · ".join(parts)


def approval_message(card: Card) -> tuple[str, list[dict[str, Any]]]:
    """The parent message: a status card, updated in place as the request moves."""
    req = card.request
    title = (
        f":rotating_light: EMERGENCY access #{req.id}: {req.resource}"
        if req.emergency
        else f"Break-glass request #{req.id}: {req.resource}"
    )
    blocks: list[Any] = [
        HeaderBlock(text=PlainTextObject(text=title[:150])),
        SectionBlock(text=request_summary(card)),
        ContextBlock(elements=[MarkdownTextObject(text=status_line(card)[:SECTION_LIMIT])]),
    ]
    if card.state == State.PENDING:
        rid = str(req.id)
        blocks.append(
            ActionsBlock(
                block_id=BlockId.DECISION,
                elements=[
                    confirmed_button(
                        ActionId.APPROVE,
                        "Approve",
                        "primary",
                        rid,
                        "Approve access?",
                        f"{mention(req.requester)} gets `{escape(req.resource)}` for "
                        f"{format_duration(card.duration)}.",
                    ),
                    ButtonElement(action_id=ActionId.DENY, text="Deny", style="danger", value=rid),
                ],
            )
        )
    text = f"{title}: {describe_state(card.state)}"
    if card.state == State.PENDING and card.approvers:
        # The fallback text is what push notifications show: name who must act.
        text += " (" + " ".join(mention(u) for u in card.approvers) + ")"
    return text, [b.to_dict() for b in blocks]


def event_text(card: Card, event: Event, actor: str, note: str = "") -> str:
    """One line in the request's thread: the event log."""
    who = mention(actor) if actor.startswith(("U", "W")) else f"_{actor}_"
    req = card.request
    lines = {
        Event.REQUESTED: f"{who} asked for `{escape(req.resource)}` for "
        f"{format_duration(card.duration)}.",
        Event.APPROVAL_RECORDED: f":ballot_box_with_check: {who} approved ({escape(note)}).",
        Event.APPROVED: f":white_check_mark: Approved by {who}. Issuing the credential.",
        Event.EMERGENCY: f":rotating_light: *{who} broke the glass*: access granted without "
        "approval. A review is required afterwards.",
        Event.DENIED: f":no_entry: Denied by {who}: {escape(note)}",
        Event.TIMED_OUT: ":alarm_clock: No decision in time; the request timed out.",
        Event.CANCELLED: f"Cancelled by {who}.",
        Event.ISSUED: (
            f":unlock: Issued `{escape(card.grant.identity)}` until "
            f"{slack_date(card.grant.expires_at)}."
            + (f" :warning: {escape(note)}." if note else "")
            if card.grant
            else ":unlock: Issued."
        ),
        Event.ISSUE_FAILED: f":x: Could not issue the credential: {escape(note)}",
        Event.REVEALED: f":eyes: {who} revealed the credential.",
        Event.REVEAL_TAMPER: f":rotating_light: *Tamper alert*: the wrapping token was already "
        f"unwrapped when {who} clicked Reveal.",
        Event.ENDING: ":hourglass: Revoking in Vault…",
        Event.REVOKED: f":lock: Revoked by {who}" + (f": {escape(note)}" if note else "."),
        Event.EXPIRED: ":lock: Expired; the credential was revoked.",
        Event.REVOKE_FAILED: f":warning: Revocation pending, Vault unreachable ({escape(note)}). "
        "Retried until Vault confirms; Vault ends the lease at its TTL regardless.",
        Event.REVOCATION_STUCK: ":rotating_light: Revocation still pending; security alerted.",
        Event.DELIVERED: f":envelope: Credential delivered privately to {mention(req.requester)}.",
        Event.DELIVERY_FAILED: f":warning: The credential could not be delivered ({escape(note)}); "
        "it was revoked and a fresh one goes out as soon as Slack answers.",
        Event.REISSUED: ":arrows_counterclockwise: A fresh credential was issued for delivery.",
        Event.ACTIVITY: f":mag_right: What `{escape(card.grant.identity if card.grant else '')}` "
        f"ran: {escape(note)}",
        Event.REVIEW_OPENED: f":mag: A review of this access is owed{_due(card)}. "
        + _reviewers(card, "click Review below, or see `/breakglass reviews`."),
        Event.REVIEW_REMINDED: f":warning: *Review overdue*{_due(card, 'was due')}. "
        + _reviewers(card, "click Review below."),
        Event.REVIEW_CLOSED: f":clipboard: Reviewed by {who}: {_outcome(card)}" + _quote(note),
    }
    return lines[event]


def _reviewers(card: Card, ask: str) -> str:
    """Who may close the review, mentioned (the reply pings them), and what to do."""
    if not card.reviewers:
        return (
            "Nobody can: the policy names no reviewer of this resource other than the "
            "requester; give it `reviewers:`."
        )
    named = " ".join(mention(u) for u in card.reviewers[:20])
    more = len(card.reviewers) - 20
    return "Reviewers " + named + (f" and {more} more" if more > 0 else "") + ": " + ask


def _due(card: Card, words: str = "due") -> str:
    return f" ({words} {slack_date(card.review.due_at)})" if card.review else ""


QUOTE_LIMIT = 2600  # quoted notes, so that the line above them fits the section too


def _quote(note: str) -> str:
    """Free text as a block quote under the line (every line quoted)."""
    if not note:
        return ""
    quoted = "\n".join(f">{line}" for line in escape(note).splitlines())
    return "\n" + clip_mrkdwn(quoted, QUOTE_LIMIT)


def _outcome(card: Card) -> str:
    outcome = card.review.outcome if card.review else None
    if outcome in set(Outcome):
        return f"*{Outcome(outcome).label.lower()}*"
    return escape(outcome or "closed")


def thread_reply(
    card: Card, event: Event, actor: str, note: str = ""
) -> tuple[str, list[dict[str, Any]]]:
    """A reply in the request's thread: the event, and the audit event it was recorded as."""
    text = event_text(card, event, actor, note)
    body: list[Any] = [SectionBlock(text=clip_mrkdwn(text, SECTION_LIMIT))]
    if event in (Event.REVIEW_OPENED, Event.REVIEW_REMINDED):
        body.append(review_button(card.request.id))
    if card.event is not None:
        body.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(text=f"audit #{card.event.seq} · `{card.event.hash[:16]}`")
                ]
            )
        )
    return text, [b.to_dict() for b in body]
