"""Block Kit for the requester's credential: the DM, its later states, the reveal modal."""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.domain.workflow import State, describe_state
from bot.slack.format import confirmed_button, escape, escape_clip, mention, slack_date
from bot.slack.ids import ActionId, BlockId, ViewId
from bot.usecases.ports import Card


def revealing_modal() -> View:
    """Opened at once on Reveal (the trigger lives 3 s); updated once Vault answered."""
    return _note_modal(":hourglass_flowing_sand: Revealing…")


def reveal_refused_modal(reason: str) -> View:
    text = reason[:1].upper() + reason[1:]
    return _note_modal(escape_clip(text if text.endswith(".") else text + ".", 2900))


def _note_modal(text: str) -> View:
    """The reveal window saying one thing (mrkdwn, already escaped)."""
    return View(
        type="modal",
        callback_id=ViewId.REVEAL,
        title="Credential",
        close="Close",
        blocks=[SectionBlock(text=text)],
    )


def reveal_modal(card: Card, payload: dict[str, Any]) -> View:
    """The credential itself. Slack keeps no history of modals. One section per field, each
    within Slack's limit, so no credential is ever too big to show."""
    first = [k for k in ("username", "password") if k in payload]
    ordered = first + sorted(k for k in payload if k not in first)
    expires = card.grant.expires_at if card.grant else None
    fields = [
        SectionBlock(text=f"*{escape(str(k))[:100]}*\n```{str(payload[k])[:2800]}```")
        for k in ordered[:40]
    ]
    return View(
        type="modal",
        callback_id=ViewId.REVEAL,
        title=f"Credential #{card.request.id}"[:24],
        close="Done",
        blocks=[
            SectionBlock(
                text=f"*{escape(card.request.resource)}*, valid until "
                f"{slack_date(expires) if expires else 'its expiry'}."
            ),
            *fields,
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text="Shown once. Copy it now; closing this window discards it."
                    )
                ]
            ),
        ],
    )


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
            text=f"Reveal it here, or from a terminal: `{addr}vault unwrap {wrapping_token}` "
            "(with OpenBao's CLI: `bao unwrap`, the same token)",
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
                    text="Use either Reveal or `vault unwrap` (`bao unwrap`), not both: the "
                    "token works once, "
                    "and a second unwrap is reported to security as tampering."
                )
            ]
        ),
    ]
    text = f"Access #{rid} to {req.resource} is active"
    return text, [b.to_dict() for b in blocks]


def _revoke_button(rid: str) -> ButtonElement:
    return confirmed_button(
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
