"""The Bolt app factory and the WSGI app that serves it (POST /slack/events, GET /healthz,
/readyz and /metrics)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from slack_bolt import App
from slack_bolt.adapter.flask import SlackRequestHandler
from slack_bolt.request.internals import parse_body
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier

from bot import logs
from bot.domain.forms import BadInput, parse_request_id
from bot.slack import errors
from bot.slack.approval import handlers as approval
from bot.slack.credential import handlers as credential
from bot.slack.request import handlers as request_handlers
from bot.slack.review import handlers as review
from bot.usecases import Breakglass

log = logging.getLogger(__name__)


def register_listeners(app: App, service: Breakglass) -> None:
    request_handlers.register(app, service)
    approval.register(app, service)
    credential.register(app, service)
    review.register(app, service)


def request_of(body: dict[str, Any]) -> int | None:
    """The request a Slack event acts on: a button's value, a modal's private_metadata, a
    command's second word (`/breakglass revoke 12`); None for anything else."""
    candidates: list[object] = []
    actions = body.get("actions")
    if isinstance(actions, list) and actions and isinstance(actions[0], dict):
        candidates.append(actions[0].get("value"))
    view = body.get("view")
    if isinstance(view, dict) and view.get("private_metadata"):
        try:
            meta = json.loads(view["private_metadata"])
        except (TypeError, ValueError):
            meta = None
        if isinstance(meta, dict):
            candidates.append(meta.get("request_id"))
    words = str(body.get("text") or "").split()
    if body.get("command") and len(words) == 2:
        candidates.append(words[1])
    for value in candidates:
        try:
            return parse_request_id(value)
        except BadInput:
            continue
    return None


def _log_context(body: dict, next: Callable[[], Any]) -> Any:
    """Every line logged while handling this event names the request it acts on and who
    acts (listeners run in a copy of this context: `bot.logs.ContextExecutor`)."""
    logs.clear()
    body = body if isinstance(body, dict) else {}
    user = body.get("user")
    actor = (user.get("id") if isinstance(user, dict) else user) or body.get("user_id")
    ids: dict[str, Any] = {}
    request_id = request_of(body)
    if request_id is not None:
        ids["request_id"] = request_id
    if isinstance(actor, str) and actor:
        ids["actor"] = actor[:32]
    logs.bind(**ids)
    return next()


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
        # Bolt's default pool (5 threads), running each listener in its event's log context.
        listener_executor=logs.ContextExecutor(max_workers=5, thread_name_prefix="listener"),
    )
    app.use(_log_context)
    register_listeners(app, service)
    errors.register(app, client)
    return app


MAX_BODY = 1 << 20  # Slack's payloads are far smaller; anything bigger is not from Slack


def verified_body(verifier: SignatureVerifier, headers: Any, raw: bytes) -> tuple[int, str]:
    """(status, reason): 200 when the request is signed by Slack, fresh and readable.

    Checked before Bolt sees the request: Bolt parses the body before verifying it and answers
    a malformed timestamp or payload with a 500, so nothing unverified may reach it.
    """
    timestamp = headers.get("X-Slack-Request-Timestamp") or ""
    signature = headers.get("X-Slack-Signature") or ""
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return 401, "missing or malformed X-Slack-Request-Timestamp"
    if not signature.isascii() or not signature.startswith("v0="):
        return 401, "missing or malformed X-Slack-Signature"
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        return 400, "body is not UTF-8"
    if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
        return 401, "invalid or stale signature"
    try:
        parsed = parse_body(body, headers.get("Content-Type"))
    except ValueError:
        return 400, "unreadable body"
    if not isinstance(parsed, dict):
        return 400, "unreadable body"
    return 200, ""


def create_web_app(
    app: App,
    *,
    signing_secret: str | None,
    live: Callable[[], dict],
    ready: Callable[[], dict],
    metrics: Callable[[], bytes] | None = None,
) -> Flask:
    web = Flask("breakglass")
    web.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    handler = SlackRequestHandler(app)
    verifier = SignatureVerifier(signing_secret or "")

    @web.before_request
    def new_log_context() -> None:
        # gunicorn's threads serve one request after another: nothing carries over.
        logs.clear()

    @web.post("/slack/events")
    def slack_events():  # type: ignore[no-untyped-def]
        if signing_secret is None:
            return jsonify(error="this bot serves Socket Mode, not HTTP"), 404
        status, reason = verified_body(verifier, request.headers, request.get_data(cache=True))
        if status != 200:
            # Nothing about an unverified request is acted on, or logged beyond this line.
            log.info("refused a request to /slack/events: %s", reason)
            return jsonify(error=reason), status
        return handler.handle(request)

    @web.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        """Liveness: the process answers. Whether it is useful is /readyz."""
        return jsonify(live()), 200

    @web.get("/readyz")
    def readyz():  # type: ignore[no-untyped-def]
        status = ready()
        return jsonify(status), (200 if status.get("ok") else 503)

    @web.get("/metrics")
    def prometheus_metrics():  # type: ignore[no-untyped-def]
        """Prometheus text. Not a Slack request: no signature; it holds counts, no secret."""
        if metrics is None:
            return jsonify(error="no metrics in this process"), 404
        try:
            body = metrics()
        except Exception:
            # Computed from the database at scrape time: a failed scrape says so, briefly.
            log.exception("could not compute /metrics")
            return Response("metrics unavailable: see the bot's log\n", 503, mimetype="text/plain")
        return Response(body, 200, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return web
