"""The requester's credential: Reveal (a modal) and Revoke now."""

from __future__ import annotations

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.domain.workflow import Refused
from bot.slack.approval.handlers import clicked_request
from bot.slack.credential import blocks
from bot.slack.ids import ActionId
from bot.usecases import Breakglass


def register(app: App, service: Breakglass) -> None:
    @app.action(ActionId.REVOKE)
    def handle_revoke_action(ack: Ack, body: dict) -> None:
        ack()
        service.grants.revoke(clicked_request(body), body["user"]["id"])

    @app.action(ActionId.REVEAL)
    def handle_reveal_action(ack: Ack, body: dict, client: WebClient) -> None:
        ack()
        request_id = clicked_request(body)
        token = blocks.wrapped_token_from(body.get("message") or {})
        if token is None:
            raise Refused("this message no longer holds a credential")
        payload = service.grants.reveal(request_id, body["user"]["id"], token)
        client.views_open(
            trigger_id=body["trigger_id"],
            view=blocks.reveal_modal(service.card(request_id), payload),
        )
