"""Asking: the /breakglass command (form, help, revoke, cancel, reviews, stats) and the request
modal."""

from __future__ import annotations

import logging

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot.domain.forms import BadInput, RequestForm, parse_request_id
from bot.domain.periods import PeriodError, parse_period
from bot.policy import Policy
from bot.slack.format import escape
from bot.slack.ids import FIELD_BLOCKS, ViewId
from bot.slack.request import blocks
from bot.slack.review import blocks as review_blocks
from bot.slack.stats import stats_text
from bot.usecases import Breakglass
from bot.usecases.stats import NOT_FOR_YOU

log = logging.getLogger(__name__)

VERBS = ("revoke", "cancel")
MODALS_KEPT = 64  # request forms kept built, one per set of resources people may ask for
STATS_PERIOD = "30d"  # `/breakglass stats` alone: the last 30 days, as `breakglass stats`


def register(app: App, service: Breakglass) -> None:
    # `/breakglass <verb> <id>`: what it does, and what to say when done.
    on_one_request = {
        "revoke": (service.grants.revoke, "revoked; the credential no longer works"),
        "cancel": (service.requests.cancel, "cancelled"),
    }
    pending = (
        "is being revoked: Vault did not answer, and the bot retries until Vault confirms "
        "(Vault's own lease TTL ends it regardless). The thread shows when it is done"
    )

    # The same form for everyone who may ask for the same resources: built (and checked
    # against Slack's limits) once per policy, not on every /breakglass while people queue
    # up. A reload puts a new policy in force: its forms are built anew.
    cache: list[tuple[Policy, dict[tuple[str, ...], dict]]] = [(service.policy, {})]

    def modal_for(user: str) -> dict:
        policy = service.policy
        held, modals = cache[0]
        if held is not policy:
            modals = {}
            cache[0] = (policy, modals)
        names = tuple(policy.requestable(user))
        modal = modals.get(names)
        if modal is None:
            modal = blocks.request_modal(policy, resources=names).to_dict()
            if len(modals) < MODALS_KEPT:
                modals[names] = modal
        return modal

    @app.command("/breakglass")
    def handle_breakglass_command(
        ack: Ack, command: dict, client: WebClient, respond: Respond
    ) -> None:
        text = command.get("text")
        words = text.split() if isinstance(text, str) else []
        verb = words[0].lower() if words else ""
        user = command.get("user_id")
        if verb == "":
            if not service.policy.requestable(user):
                ack(
                    "No resource in the break-glass policy lists you among its requesters; "
                    "ask the security team if you need one."
                )
                return
            ack()  # first: the trigger id lives 3 s
            client.views_open(trigger_id=command["trigger_id"], view=modal_for(user))
        elif verb in on_one_request:
            try:
                if len(words) != 2:
                    raise BadInput("one request id, please")
                request_id = parse_request_id(words[1])
            except BadInput as exc:
                ack(
                    f"{escape(str(exc))}. Usage: `/breakglass {verb} <request id>`, "
                    f"e.g. `/breakglass {verb} 12`."
                )
                return
            ack()  # Vault and the database come after the ack
            act, done = on_one_request[verb]
            finished = act(request_id, user)
            said = pending if finished is False else done
            respond(text=f"Request #{request_id} {said}.", response_type="ephemeral")
        elif verb == "reviews":
            text, body = review_blocks.review_list(service.reviews.listing(user))
            ack(text=text, blocks=body)
        elif verb == "stats":
            if not service.stats.may_see(user):
                ack(NOT_FOR_YOU[0].upper() + NOT_FOR_YOU[1:] + ".")
                return
            try:
                if len(words) > 2:
                    raise PeriodError("one period, please")
                now = service.core.clock()
                period = parse_period(
                    words[1] if len(words) == 2 else None, None, now, STATS_PERIOD
                )
            except PeriodError as exc:
                ack(
                    f"{escape(str(exc))}. Usage: `/breakglass stats [period]`, e.g. "
                    "`/breakglass stats 7d` or `/breakglass stats 2024-03-01`."
                )
                return
            ack()  # the database comes after the ack
            text = stats_text(service.stats.seen_by(user, period))
            respond(text=text, response_type="ephemeral")
        elif verb == "help":
            ack(blocks.help_text(service.policy))
        else:
            ack(f"I don't know `{escape(verb[:40])}`.\n\n" + blocks.help_text(service.policy))

    @app.view(ViewId.REQUEST)
    def handle_request_submission(ack: Ack, body: dict, view: dict, client: WebClient) -> None:
        user = body["user"]["id"]
        form = RequestForm(**blocks.read_request_form(view))
        errors = service.requests.form_errors(user, form)
        if errors:
            ack(
                response_action="errors",
                errors={str(FIELD_BLOCKS[k]): v[:150] for k, v in errors.items()},
            )
            return
        ack()
        # This person's modal (Slack's view id): a replayed submission of this very form
        # files nothing new.
        view_id = view.get("id")
        key = f"{user}:{view_id}"[:64] if isinstance(view_id, str) and view_id else None
        service.requests.submit(user, form, submission_key=key)
