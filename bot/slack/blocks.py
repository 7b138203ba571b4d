"""Block Kit builders: pure functions from domain objects to Slack views and blocks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    CheckboxesElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from bot.durations import format_duration
from bot.policy import Policy
from bot.service import MIN_JUSTIFICATION, Card
from bot.slack.ids import ActionId, BlockId, ViewId
from bot.workflow import Event, State, describe_state

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


def slack_date(when: datetime) -> str:
    """Slack's date token: each reader sees their own time zone."""
    fallback = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def mention(user: str) -> str:
    return f"<@{user}>"


STATE_BADGE = {
    State.PENDING: ":hourglass_flowing_sand: Waiting for approval",
    State.APPROVED: ":white_check_mark: Approved, issuing",
    State.ACTIVE: ":unlock: Active",
    State.DENIED: ":no_entry: Denied",
    State.TIMED_OUT: ":alarm_clock: Timed out",
    State.CANCELLED: ":heavy_multiplication_x: Cancelled",
    State.EXPIRED: ":lock: Ended (expired)",
    State.REVOKED: ":lock: Ended (revoked)",
    State.FAILED: ":x: Failed to issue",
}

# ---- the request modal ----------------------------------------------------------------


def request_modal(policy: Policy, user: str | None = None) -> View:
    """The request form; with `user`, only the resources that person may ask for."""
    allowed = set(policy.requestable(user)) if user else set(policy.resources)
    resources = sorted(
        ((n, r) for n, r in policy.resources.items() if n in allowed), key=lambda item: item[0]
    )
    options = [
        Option(
            value=name,
            text=name[:75],
            description=(res.description or f"max {format_duration(res.max_duration)}")[:75],
        )
        for name, res in resources
    ]
    maxima = ", ".join(f"{n}: {format_duration(r.max_duration)}" for n, r in resources)
    emergency_ok = [n for n, r in resources if r.emergency]
    blocks: list[Any] = [
        InputBlock(
            block_id=BlockId.RESOURCE,
            label="Resource",
            element=StaticSelectElement(
                action_id=ActionId.RESOURCE, placeholder="What do you need?", options=options
            ),
        ),
        InputBlock(
            block_id=BlockId.DURATION,
            label="For how long",
            hint=f"e.g. 30m or 1h. Longest: {maxima}"[:2000],
            element=PlainTextInputElement(
                action_id=ActionId.DURATION, placeholder="30m", initial_value="30m", max_length=20
            ),
        ),
        InputBlock(
            block_id=BlockId.JUSTIFICATION,
            label="Why",
            hint="What is broken, and what will you do? Recorded in the audit log.",
            element=PlainTextInputElement(
                action_id=ActionId.JUSTIFICATION,
                multiline=True,
                min_length=1,
                max_length=2000,
                placeholder=f"At least {MIN_JUSTIFICATION} characters",
            ),
        ),
        InputBlock(
            block_id=BlockId.TICKET,
            label="Ticket or incident",
            optional=True,
            element=PlainTextInputElement(
                action_id=ActionId.TICKET, placeholder="INC-1234", max_length=200
            ),
        ),
    ]
    if emergency_ok:
        blocks.append(
            InputBlock(
                block_id=BlockId.EMERGENCY,
                label="Emergency",
                optional=True,
                hint=f"Only for: {', '.join(emergency_ok)}"[:2000],
                element=CheckboxesElement(
                    action_id=ActionId.EMERGENCY,
                    confirm=ConfirmObject(
                        title="Break the glass?",
                        text="Access is granted at once, without approval. The security "
                        "channel is alerted and a review of this access is mandatory.",
                        confirm="Break the glass",
                        deny="Back",
                    ),
                    options=[
                        Option(
                            value="emergency",
                            text="Break the glass: grant now, without approval",
                            description="Security is alerted; a review is mandatory afterwards",
                        )
                    ],
                ),
            )
        )
    return View(
        type="modal",
        callback_id=ViewId.REQUEST,
        title="Break-glass access",
        submit="Request",
        close="Cancel",
        blocks=blocks,
    )


def read_request_form(values: dict[str, Any]) -> dict[str, Any]:
    """The submitted modal's state.values as form fields."""

    def get(block: BlockId, action: ActionId) -> dict[str, Any]:
        return values.get(block, {}).get(action, {}) or {}

    selected = get(BlockId.RESOURCE, ActionId.RESOURCE).get("selected_option") or {}
    checks = get(BlockId.EMERGENCY, ActionId.EMERGENCY).get("selected_options") or []
    return {
        "resource": selected.get("value"),
        "duration": get(BlockId.DURATION, ActionId.DURATION).get("value"),
        "justification": get(BlockId.JUSTIFICATION, ActionId.JUSTIFICATION).get("value"),
        "ticket": get(BlockId.TICKET, ActionId.TICKET).get("value"),
        "emergency": any(o.get("value") == "emergency" for o in checks),
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


def reveal_modal(card: Card, payload: dict[str, Any]) -> View:
    """The credential itself. Slack keeps no history of modals."""
    first = [k for k in ("username", "password") if k in payload]
    ordered = first + sorted(k for k in payload if k not in first)
    lines = "\n".join(f"{k}: {payload[k]}" for k in ordered)
    expires = card.grant.expires_at if card.grant else None
    return View(
        type="modal",
        callback_id=ViewId.REVEAL,
        title=f"Credential #{card.request.id}"[:24],
        close="Done",
        blocks=[
            SectionBlock(
                text=f"*{card.request.resource}*, valid until "
                f"{slack_date(expires) if expires else 'its expiry'}."
            ),
            SectionBlock(text=f"```{lines}```"),
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text="Shown once. Copy it now; closing this window discards it."
                    )
                ]
            ),
        ],
    )


# ---- the security channel ---------------------------------------------------------------


def request_summary(card: Card) -> str:
    req = card.request
    ticket = f"\n*Ticket:* {escape_clip(req.ticket, 400)}" if req.ticket else ""
    head = (
        f"*Requester:* {mention(req.requester)}\n"
        f"*Resource:* `{escape(req.resource)}`, {escape_clip(card.resource.description, 300)}\n"
        f"*Duration:* {format_duration(card.duration)}{ticket}\n"
        "*Why:* "
    )
    # A section holds 3000 characters; escaping can make a long justification longer.
    return head + escape_clip(req.justification, SECTION_LIMIT - len(head))


def status_line(card: Card) -> str:
    req, state = card.request, card.state
    parts = [STATE_BADGE[state]]
    if state == State.PENDING:
        parts.append(f"{len(set(card.approvals))} of {card.needed} approvals")
        if card.approvers:
            parts.append("approvers: " + " ".join(mention(u) for u in card.approvers))
    if card.approvals and state != State.PENDING and not req.emergency:
        parts.append("approved by " + ", ".join(mention(u) for u in dict.fromkeys(card.approvals)))
    if state == State.DENIED and card.denied_by:
        parts.append(f"by {mention(card.denied_by)}: {escape(card.deny_reason)}")
    if card.grant and state == State.ACTIVE:
        parts.append(f"`{escape(card.grant.identity)}` until {slack_date(card.grant.expires_at)}")
    if card.grant and card.grant.ended_at:
        parts.append(f"ended {slack_date(card.grant.ended_at)}")
    if req.emergency:
        parts.append("*review required*")
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
        ContextBlock(elements=[MarkdownTextObject(text=status_line(card))]),
    ]
    if card.state == State.PENDING:
        rid = str(req.id)
        blocks.append(
            ActionsBlock(
                block_id=BlockId.DECISION,
                elements=[
                    _confirmed_button(
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
            f"{slack_date(card.grant.expires_at)}; delivered privately to "
            f"{mention(req.requester)}." + (f" :warning: {escape(note)}." if note else "")
            if card.grant
            else ":unlock: Issued."
        ),
        Event.ISSUE_FAILED: f":x: Could not issue the credential: {escape(note)}",
        Event.REVEALED: f":eyes: {who} revealed the credential.",
        Event.REVEAL_TAMPER: f":rotating_light: *Tamper alert*: the wrapping token was already "
        f"unwrapped when {who} clicked Reveal.",
        Event.REVOKED: f":lock: Revoked by {who}" + (f": {escape(note)}" if note else "."),
        Event.EXPIRED: ":lock: Expired; the credential was revoked.",
        Event.REVOKE_FAILED: f":warning: Revocation failed: {escape(note)}. Retrying; Vault "
        "ends the lease at its TTL regardless.",
    }
    return lines[event]


def thread_reply(
    card: Card, event: Event, actor: str, note: str = ""
) -> tuple[str, list[dict[str, Any]]]:
    """A reply in the request's thread: the event, and the audit event it was recorded as."""
    text = event_text(card, event, actor, note)
    body: list[Any] = [SectionBlock(text=text[:SECTION_LIMIT])]
    if card.event is not None:
        body.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(text=f"audit #{card.event.seq} · `{card.event.hash[:16]}`")
                ]
            )
        )
    return text, [b.to_dict() for b in body]


# ---- the requester's private messages ---------------------------------------------------


def credential_message(
    card: Card, wrapping_token: str, vault_addr: str | None
) -> tuple[str, list[dict[str, Any]]]:
    """The requester's DM: a single-use wrapping token, Reveal and Revoke now."""
    req, grant = card.request, card.grant
    assert grant is not None
    rid = str(req.id)
    addr = f"VAULT_ADDR={vault_addr} " if vault_addr else ""
    wrap_until = slack_date(grant.wrap_expires_at) if grant.wrap_expires_at else "soon"
    blocks: list[Any] = [
        SectionBlock(
            text=f":unlock: Access #{rid} to *{escape(req.resource)}* is active until "
            f"{slack_date(grant.expires_at)}. Your credential `{escape(grant.identity)}` is "
            f"wrapped in a single-use token that works until {wrap_until}."
        ),
        SectionBlock(
            block_id=BlockId.WRAPPED_TOKEN,
            text=f"Reveal it here, or from a terminal: `{addr}vault unwrap {wrapping_token}`",
        ),
        ActionsBlock(
            block_id=BlockId.CREDENTIAL_ACTIONS,
            elements=[
                ButtonElement(action_id=ActionId.REVEAL, text="Reveal", style="primary", value=rid),
                _revoke_button(rid),
            ],
        ),
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text="Use either Reveal or `vault unwrap`, not both: the token works once, "
                    "and a second unwrap is reported to security as tampering."
                )
            ]
        ),
    ]
    text = f"Access #{rid} to {req.resource} is active"
    return text, [b.to_dict() for b in blocks]


def _confirmed_button(
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


def _revoke_button(rid: str) -> ButtonElement:
    return _confirmed_button(
        ActionId.REVOKE,
        "Revoke now",
        "danger",
        rid,
        "Revoke access now?",
        "The credential stops working at once.",
    )


def credential_status(card: Card) -> tuple[str, list[dict[str, Any]]]:
    """The requester's DM once its token is spent (revealed) or the access has ended."""
    req, grant = card.request, card.grant
    assert grant is not None
    rid = str(req.id)
    resource = escape(req.resource)
    if card.state == State.ACTIVE:
        when = slack_date(grant.revealed_at) if grant.revealed_at else "earlier"
        blocks: list[Any] = [
            SectionBlock(
                text=f":unlock: Access #{rid} to *{resource}* is active until "
                f"{slack_date(grant.expires_at)}. Credential `{escape(grant.identity)}` was "
                f"revealed {when}; the single-use token that was here is spent."
            ),
            ActionsBlock(block_id=BlockId.CREDENTIAL_ACTIONS, elements=[_revoke_button(rid)]),
        ]
        return f"Access #{rid} to {req.resource} is active", [b.to_dict() for b in blocks]
    how = (
        f"was revoked by {mention(grant.ended_by)}"
        if card.state == State.REVOKED and grant.ended_by and grant.ended_by[0] in "UW"
        else describe_state(card.state)
    )
    ended = f" {slack_date(grant.ended_at)}" if grant.ended_at else ""
    text = (
        f":lock: Access #{rid} to *{resource}* {how}{ended}. "
        f"Credential `{escape(grant.identity)}` no longer works."
    )
    return f"Access #{rid} to {req.resource} ended", [SectionBlock(text=text).to_dict()]


def wrapped_token_from(message: dict[str, Any]) -> str | None:
    """Find the wrapping token in the DM the Reveal button belongs to."""
    for block in message.get("blocks", []):
        if block.get("block_id") == BlockId.WRAPPED_TOKEN:
            text = (block.get("text") or {}).get("text", "")
            marker = "vault unwrap "
            if marker in text:
                return text.split(marker, 1)[1].split("`", 1)[0].strip() or None
    return None


def help_text(policy: Policy) -> str:
    resources = "\n".join(
        f"• `{n}`: {escape(r.description)} (up to {format_duration(r.max_duration)}"
        f"{', emergency allowed' if r.emergency else ''})"
        for n, r in sorted(policy.resources.items())
    )
    return (
        "*Break-glass access*\n"
        "`/breakglass`: ask for emergency access (opens a form)\n"
        "`/breakglass revoke <id>`: end an active access now\n"
        "`/breakglass cancel <id>`: withdraw your request while it waits for approval\n"
        "`/breakglass help`: this message\n\n"
        f"Resources:\n{resources}\n\n"
        "Approvers decide in the security channel; the credential comes to you privately "
        "and is revoked on time. Every step is recorded."
    )
