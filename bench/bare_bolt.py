"""A bare Bolt app that acks `/breakglass` and opens a one-field modal, served as the bot is
(gunicorn gthread, Flask adapter): the floor of bench/http_concurrency.py.

    SLACK_SIGNING_SECRET=... SLACK_API_URL=http://127.0.0.1:PORT/api/ \\
        gunicorn -k gthread --threads 16 -w 1 --chdir bench 'bare_bolt:create()'
"""

from __future__ import annotations

import os

from flask import Flask, request
from slack_bolt import Ack, App
from slack_bolt.adapter.flask import SlackRequestHandler
from slack_sdk import WebClient

MODAL = {
    "type": "modal",
    "callback_id": "bare.submit",
    "title": {"type": "plain_text", "text": "Bare Bolt"},
    "submit": {"type": "plain_text", "text": "Send"},
    "blocks": [
        {
            "type": "input",
            "block_id": "why",
            "label": {"type": "plain_text", "text": "Why"},
            "element": {"type": "plain_text_input", "action_id": "why.value"},
        }
    ],
}


def create() -> Flask:
    token = "xoxb-bare-bolt"  # noqa: S105 (the Slack fake takes any token)
    client = WebClient(token=token, base_url=os.environ["SLACK_API_URL"])
    app = App(
        client=client,
        signing_secret=os.environ["SLACK_SIGNING_SECRET"],
        token_verification_enabled=False,
    )

    @app.command("/breakglass")
    def open_modal(ack: Ack, command: dict, client: WebClient) -> None:
        ack()
        client.views_open(trigger_id=command["trigger_id"], view=MODAL)

    web = Flask("bare-bolt")
    handler = SlackRequestHandler(app)

    @web.post("/slack/events")
    def events():  # type: ignore[no-untyped-def]
        return handler.handle(request)

    @web.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        return {"ok": True}

    return web
