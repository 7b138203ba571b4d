"""The requester's credential: Reveal (a modal that opens first, then shows the credential)
and Revoke now."""

from __future__ import annotations

import logging

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot.domain.workflow import Refused
from bot.slack.approval.handlers import clicked_request
from bot.slack.credential import blocks
from bot.slack.ids import ActionId
from bot.usecases import Breakglass

log = logging.getLogger(__name__)


def register(app: App, service: Breakglass) -> None:
    @app.action(ActionId.REVOKE)
    def handle_revoke_action(ack: Ack, body: dict, respond: Respond) -> None:
        ack()
        request_id = clicked_request(body)
        if service.grants.revoke(request_id, body["user"]["id"]) is False:
            respond(
                text=f"Request #{request_id}: revocation pending. Vault did not answer; the bot "
                "retries until Vault confirms (the lease's own TTL ends it regardless).",
                response_type="ephemeral",
                replace_original=False,
            )

    @app.action(ActionId.REVEAL)
    def handle_reveal_action(ack: Ack, body: dict, client: WebClient) -> None:
        ack()
        request_id = clicked_request(body)
        token = blocks.wrapped_token_from(body.get("message") or {})
        if token is None:
            raise Refused("this message no longer holds a credential")
        user = body["user"]["id"]
        service.grants.check_reveal(request_id, user)  # refusals needing no Vault: ephemeral
        # The modal first, inside the trigger's 3 seconds: if it cannot open, nothing is spent.
        opened = client.views_open(trigger_id=body["trigger_id"], view=blocks.revealing_modal())
        view_id = opened["view"]["id"]
        try:
            payload = service.grants.reveal(request_id, user, token)
        except Refused as exc:
            client.views_update(view_id=view_id, view=blocks.reveal_refused_modal(str(exc)))
            log.info("reveal of request %s refused: %s", request_id, exc)
            return
        try:
            client.views_update(
                view_id=view_id, view=blocks.reveal_modal(service.card(request_id), payload)
            )
        except Exception:
            log.warning("request %s: the reveal modal could not be filled in", request_id)
            service.grants.lost(request_id, "Slack did not show the reveal window")
            return
        service.grants.shown(request_id, user)
