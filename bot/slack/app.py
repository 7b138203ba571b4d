"""The Bolt app factory and the WSGI app that serves it (POST /slack/events, GET /healthz)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from flask import Flask, jsonify, request
from slack_bolt import App
from slack_bolt.adapter.flask import SlackRequestHandler
from slack_sdk import WebClient

from bot.service import BreakglassService
from bot.slack import actions, commands, views

log = logging.getLogger(__name__)


def register_listeners(app: App, service: BreakglassService) -> None:
    commands.register(app, service)
    views.register(app, service)
    actions.register(app, service)


def create_app(
    service: BreakglassService,
    client: WebClient,
    *,
    signing_secret: str | None,
    process_before_response: bool = False,
) -> App:
    """A Bolt app wired to the service. Nothing is built at import time."""
    app = App(
        client=client,
        signing_secret=signing_secret,
        token_verification_enabled=False,
        process_before_response=process_before_response,
        # Slack's own request-URL check is answered without touching our listeners.
        ssl_check_enabled=True,
    )
    register_listeners(app, service)

    @app.error
    def handle_unexpected_error(error: Exception, body: dict) -> None:
        # Never a stack trace in front of a person: they get a reference, the log the trace.
        ref = secrets.token_hex(4)
        log.error("unhandled error in a Slack listener (ref %s)", ref, exc_info=error)
        user = (body.get("user") or {}).get("id") or body.get("user_id")
        if user:
            try:
                client.chat_postMessage(
                    channel=user,
                    text=f"Something went wrong on our side (ref `{ref}`). Whatever was already "
                    "recorded stays recorded; the bot's operators can find the details in its "
                    "log under that reference. Try again, or ask in the security channel.",
                )
            except Exception:
                log.exception("could not tell %s about error %s", user, ref)

    return app


def create_web_app(app: App, health: Callable[[], dict]) -> Flask:
    web = Flask("breakglass")
    handler = SlackRequestHandler(app)

    @web.post("/slack/events")
    def slack_events():  # type: ignore[no-untyped-def]
        return handler.handle(request)

    @web.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        status = health()
        return jsonify(status), (200 if status.get("ok") else 503)

    return web
