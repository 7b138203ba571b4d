"""The /breakglass slash command: open the request modal, help, revoke."""

from __future__ import annotations

import logging

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot.service import BreakglassService
from bot.slack import blocks
from bot.workflow import Refused

log = logging.getLogger(__name__)


# `/breakglass <verb> <id>`: what it does, and what to say when done.
ON_ONE_REQUEST = {
    "revoke": (BreakglassService.revoke, "revoked; the credential no longer works"),
    "cancel": (BreakglassService.cancel, "cancelled"),
}


def register(app: App, service: BreakglassService) -> None:
    @app.command("/breakglass")
    def handle_breakglass_command(
        ack: Ack, command: dict, client: WebClient, respond: Respond
    ) -> None:
        words = (command.get("text") or "").split()
        verb = words[0].lower() if words else ""
        if verb == "":
            user = command["user_id"]
            if not service.policy.requestable(user):
                ack(
                    "No resource in the break-glass policy lists you among its requesters; "
                    "ask the security team if you need one."
                )
                return
            ack()  # first: the trigger id lives 3 s
            client.views_open(
                trigger_id=command["trigger_id"], view=blocks.request_modal(service.policy, user)
            )
        elif verb in ON_ONE_REQUEST:
            if len(words) != 2 or not words[1].lstrip("#").isdigit():
                ack(f"Usage: `/breakglass {verb} <request id>`, e.g. `/breakglass {verb} 12`.")
                return
            ack()  # Vault and the database come after the ack
            request_id = int(words[1].lstrip("#"))
            act, done = ON_ONE_REQUEST[verb]
            try:
                act(service, request_id, command["user_id"])
                respond(text=f"Request #{request_id} {done}.", response_type="ephemeral")
            except Refused as exc:
                log.info(
                    "refused %s of request %s by %s: %s", verb, request_id, command["user_id"], exc
                )
                respond(text=f"Cannot {verb} #{request_id}: {exc}.", response_type="ephemeral")
        elif verb == "help":
            ack(blocks.help_text(service.policy))
        else:
            ack(f"I don't know `{blocks.escape(verb)}`.\n\n" + blocks.help_text(service.policy))
