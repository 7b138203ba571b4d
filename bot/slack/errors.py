"""The one error handler: a domain error reaches the person on the surface they used (an
ephemeral reply, or a DM after a modal closed); anything else is a reference into the log."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from slack_bolt import App, BoltResponse, Respond
from slack_sdk import WebClient

from bot.domain.forms import BadInput, parse_request_id
from bot.domain.reviews import AlreadyReviewed, Outcome
from bot.domain.workflow import Refused
from bot.slack.format import mention

log = logging.getLogger(__name__)


def _who(body: dict[str, Any]) -> str | None:
    user = body.get("user")
    if isinstance(user, dict):
        user = user.get("id")
    user = user or body.get("user_id")
    return user if isinstance(user, str) and user[:1] in ("U", "W") else None


def _clicked_id(body: dict[str, Any]) -> int | None:
    actions = body.get("actions")
    if isinstance(actions, list) and actions and isinstance(actions[0], dict):
        try:
            return parse_request_id(actions[0].get("value"))
        except BadInput:
            return None
    return None


def _prefix(body: dict[str, Any], rid: int | None) -> str:
    """What the refusal is about, in the person's words: "Request #12: ", "Cannot revoke #12: "."""
    if rid:
        return f"Request #{rid}: "
    words = str(body.get("text") or "").split()
    if body.get("command") and len(words) == 2:
        return f"Cannot {words[0][:10].lower()} {words[1][:12]}: "
    return ""


def _subject(body: dict[str, Any]) -> str:
    """What the person did, for the log: a command, a button, a modal."""
    actions = body.get("actions")
    if isinstance(actions, list) and actions and isinstance(actions[0], dict):
        return str(actions[0].get("action_id", "an action"))[:80]
    view = body.get("view")
    if isinstance(view, dict):
        return str(view.get("callback_id", "a modal"))[:80]
    return str(body.get("command") or body.get("type") or "a request")[:80]


def refusal_text(error: Refused) -> str:
    """A refusal in the person's words, with people as mentions (the domain names them by id)."""
    if isinstance(error, AlreadyReviewed):
        outcome = error.outcome
        label = Outcome(outcome).label.lower() if outcome in set(Outcome) else outcome
        text = f"already reviewed by {mention(error.reviewer)}: {label}"
    else:
        text = str(error)
    return text if text.endswith((".", "?", "!")) else text + "."


def tell(client: WebClient, respond: Respond | None, body: dict[str, Any], text: str) -> None:
    """Say `text` privately to whoever sent `body` (already verified: Bolt only hands over
    signed requests, and Socket Mode messages come over the app's own connection)."""
    if respond is not None and (body.get("response_url") or body.get("response_urls")):
        respond(text=text, response_type="ephemeral", replace_original=False)
        return
    user = _who(body)
    if user:
        client.chat_postMessage(channel=user, text=text)


def register(app: App, client: WebClient) -> None:
    @app.error
    def handle_error(
        error: Exception,
        body: dict,
        response: BoltResponse | None = None,
        respond: Respond | None = None,
    ) -> None:
        body = body if isinstance(body, dict) else {}
        if response is not None:
            # Handled here, by telling the person: Slack gets a plain ack, never a 500 that
            # would make it show its own error or retry.
            response.status, response.body = 200, ""
        if isinstance(error, Refused):
            # Refusals change nothing, so they are no audit event; the log keeps who tried.
            rid = _clicked_id(body)
            on = f" on request {rid}" if rid else ""
            log.info("refused %s%s by %s: %s", _subject(body), on, _who(body), error)
            message = _prefix(body, rid) + refusal_text(error)
        else:
            ref = secrets.token_hex(4)
            log.error("unhandled error in a Slack listener (ref %s)", ref, exc_info=error)
            message = (
                f"Something went wrong on our side (ref `{ref}`). Whatever was already "
                "recorded stays recorded; the bot's operators can find the details in its log "
                "under that reference. Try again, or ask in the security channel."
            )
        try:
            tell(client, respond, body, message)
        except Exception:
            log.exception("could not tell %s why %s failed", _who(body), _subject(body))
