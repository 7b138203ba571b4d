"""The Bolt app factory and the WSGI app that serves it (POST /slack/events, GET /healthz)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, jsonify, request
from slack_bolt import App
from slack_bolt.adapter.flask import SlackRequestHandler
from slack_sdk import WebClient

from bot.slack import errors
from bot.slack.approval import handlers as approval
from bot.slack.credential import handlers as credential
from bot.slack.request import handlers as request_handlers
from bot.usecases import Breakglass

log = logging.getLogger(__name__)


def register_listeners(app: App, service: Breakglass) -> None:
    request_handlers.register(app, service)
    approval.register(app, service)
    credential.register(app, service)


def create_app(
    service: Breakglass,
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
    errors.register(app, client)
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
