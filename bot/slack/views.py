"""Modal submissions: the request form and the deny reason."""

from __future__ import annotations

import json
import logging

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.service import BreakglassService, RequestForm
from bot.slack import blocks
from bot.slack.ids import FIELD_BLOCKS, ActionId, BlockId, ViewId
from bot.workflow import Refused

log = logging.getLogger(__name__)


def register(app: App, service: BreakglassService) -> None:
    @app.view(ViewId.REQUEST)
    def handle_request_submission(ack: Ack, body: dict, view: dict, client: WebClient) -> None:
        user = body["user"]["id"]
        form = RequestForm(**blocks.read_request_form(view["state"]["values"]))
        errors = service.form_errors(user, form)
        if errors:
            ack(
                response_action="errors",
                errors={str(FIELD_BLOCKS[k]): v[:150] for k, v in errors.items()},
            )
            return
        ack()
        try:
            service.submit(user, form)
        except Refused as exc:
            client.chat_postMessage(channel=user, text=f"Your request was not recorded: {exc}.")

    @app.view(ViewId.DENY)
    def handle_deny_submission(ack: Ack, body: dict, view: dict, client: WebClient) -> None:
        user = body["user"]["id"]
        request_id = int(json.loads(view["private_metadata"])["request_id"])
        values = view["state"]["values"]
        reason = (
            values.get(BlockId.DENY_REASON, {}).get(ActionId.DENY_REASON, {}).get("value") or ""
        ).strip()
        if not reason:
            ack(response_action="errors", errors={str(BlockId.DENY_REASON): "Say why."})
            return
        ack()
        try:
            service.deny(request_id, user, reason)
        except Refused as exc:
            client.chat_postMessage(channel=user, text=f"Request #{request_id}: {exc}.")
