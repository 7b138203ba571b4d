"""Buttons: approve, deny, reveal, revoke now."""

from __future__ import annotations

import logging
from collections.abc import Callable

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot.service import BreakglassService
from bot.slack import blocks
from bot.slack.ids import ActionId
from bot.workflow import Refused

log = logging.getLogger(__name__)


def _request_id(body: dict) -> int:
    return int(body["actions"][0]["value"])


def _refuse(respond: Respond, body: dict, request_id: int, exc: Refused) -> None:
    # Refusals change nothing, so they are no audit event; the log keeps who tried what.
    action = body["actions"][0]["action_id"]
    log.info("refused %s on request %s by %s: %s", action, request_id, body["user"]["id"], exc)
    respond(
        text=f"Request #{request_id}: {exc}.", response_type="ephemeral", replace_original=False
    )


def _on_click(subject: str, act: Callable[[int, str], object]) -> Callable[..., None]:
    """A button whose whole job is one service call on its request, by the clicker."""

    def handle(ack: Ack, body: dict, respond: Respond) -> None:
        ack()
        request_id = _request_id(body)
        try:
            act(request_id, body["user"]["id"])
        except Refused as exc:
            _refuse(respond, body, request_id, exc)

    handle.__name__ = handle.__qualname__ = f"handle_{subject}_action"
    return handle


def register(app: App, service: BreakglassService) -> None:
    app.action(ActionId.APPROVE)(_on_click("approve", service.approve))
    app.action(ActionId.REVOKE)(_on_click("revoke", service.revoke))

    @app.action(ActionId.DENY)
    def handle_deny_action(ack: Ack, body: dict, client: WebClient, respond: Respond) -> None:
        ack()
        request_id = _request_id(body)
        try:
            service.check_can_decide(request_id, body["user"]["id"])
        except Refused as exc:
            _refuse(respond, body, request_id, exc)
            return
        client.views_open(trigger_id=body["trigger_id"], view=blocks.deny_modal(request_id))

    @app.action(ActionId.REVEAL)
    def handle_reveal_action(ack: Ack, body: dict, client: WebClient, respond: Respond) -> None:
        ack()
        request_id = _request_id(body)
        token = blocks.wrapped_token_from(body.get("message") or {})
        try:
            if token is None:
                raise Refused("this message no longer holds a credential")
            payload = service.reveal(request_id, body["user"]["id"], token)
        except Refused as exc:
            _refuse(respond, body, request_id, exc)
            return
        client.views_open(
            trigger_id=body["trigger_id"],
            view=blocks.reveal_modal(service.card(request_id), payload),
        )
