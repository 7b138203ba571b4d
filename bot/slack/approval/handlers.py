"""Deciding: Approve and Deny on the status card, and the deny-reason modal."""

from __future__ import annotations

import json

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.domain.forms import BadInput, check_reason, parse_request_id
from bot.slack.approval import blocks
from bot.slack.ids import ActionId, BlockId, ViewId
from bot.usecases import Breakglass


def clicked_request(body: dict) -> int:
    """The request id a button carries (its value is only that id)."""
    actions = body.get("actions")
    action = actions[0] if isinstance(actions, list) and actions else {}
    return parse_request_id(action.get("value") if isinstance(action, dict) else None)


def register(app: App, service: Breakglass) -> None:
    @app.action(ActionId.APPROVE)
    def handle_approve_action(ack: Ack, body: dict) -> None:
        ack()
        service.requests.approve(clicked_request(body), body["user"]["id"])

    @app.action(ActionId.DENY)
    def handle_deny_action(ack: Ack, body: dict, client: WebClient) -> None:
        ack()
        request_id = clicked_request(body)
        service.requests.check_can_decide(request_id, body["user"]["id"])
        client.views_open(trigger_id=body["trigger_id"], view=blocks.deny_modal(request_id))

    @app.view(ViewId.DENY)
    def handle_deny_submission(ack: Ack, body: dict, view: dict) -> None:
        values = (view.get("state") or {}).get("values") or {}
        typed = (values.get(BlockId.DENY_REASON) or {}).get(ActionId.DENY_REASON) or {}
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            request_id = parse_request_id(meta.get("request_id") if isinstance(meta, dict) else 0)
            check_reason(typed.get("value"))  # checked here for the modal's inline error
        except (BadInput, ValueError) as exc:
            text = (
                str(exc) if isinstance(exc, BadInput) else "this form is damaged; click Deny again"
            )
            ack(response_action="errors", errors={str(BlockId.DENY_REASON): text[:150]})
            return
        ack()
        # As typed: the use case masks what looks like a secret, and tells the approver.
        service.requests.deny(request_id, body["user"]["id"], typed.get("value"))
