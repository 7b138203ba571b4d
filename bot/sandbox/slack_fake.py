"""A loopback stand-in for the Slack Web API that records what the bot sends, and a driver
that talks to the bot the way Slack does: correctly signed HTTP requests."""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

import requests
from slack_sdk.signature import SignatureVerifier


@dataclass
class Call:
    """One Web API call (or response_url post) the bot made."""

    method: str
    args: dict[str, Any]
    token: str | None = None

    def dump(self) -> str:
        return json.dumps(self.args, sort_keys=True, default=str)


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    broadcast: bool = False
    edits: int = 0


class FakeSlack:
    """Answers the Web API methods the bot uses; everything it receives is kept in `calls`."""

    TEAM = "T0SANDBOX"
    BOT_USER = "U0BREAKGLS"

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: list[Message] = []
        self._ts = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ---- server -------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                args = _decode(raw, self.headers.get("Content-Type", ""))
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ") or args.get("token")
                path = self.path.split("?", 1)[0]
                if path.startswith("/respond/"):
                    method = "response_url"
                    args["_user"] = path.split("/")[2]
                else:
                    method = path.removeprefix("/api/")
                answer = fake._answer(method, args, token)
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        with self._lock:
            self.calls.append(Call(method, args, token))
            if method == "auth.test":
                return {
                    "ok": True,
                    "team_id": self.TEAM,
                    "user_id": self.BOT_USER,
                    "bot_id": "B0BREAKGLS",
                    "url": "https://sandbox.slack.example/",
                }
            if method == "chat.postMessage":
                channel = str(args.get("channel"))
                if channel.startswith(("U", "W")):
                    channel = "D" + channel[1:]  # a DM with the bot, as Slack does
                ts = f"{int(time.time())}.{next(self._ts):06d}"
                msg = Message(
                    channel,
                    ts,
                    args.get("text") or "",
                    args.get("blocks") or [],
                    args.get("thread_ts"),
                    bool(args.get("reply_broadcast")),
                )
                self.messages.append(msg)
                return {
                    "ok": True,
                    "channel": channel,
                    "ts": ts,
                    "message": {"text": msg.text, "blocks": msg.blocks, "ts": ts},
                }
            if method == "chat.update":
                for msg in self.messages:
                    if msg.channel == args.get("channel") and msg.ts == args.get("ts"):
                        msg.text = args.get("text") or msg.text
                        msg.blocks = args.get("blocks") or []
                        msg.edits += 1
                        return {"ok": True, "channel": msg.channel, "ts": msg.ts}
                return {"ok": False, "error": "message_not_found"}
            if method in ("views.open", "views.push", "views.update"):
                return {
                    "ok": True,
                    "view": {"id": f"V{next(self._ts):08d}", **(args.get("view") or {})},
                }
            if method in ("chat.postEphemeral",):
                return {"ok": True, "message_ts": f"{int(time.time())}.{next(self._ts):06d}"}
            if method == "response_url":
                return {"ok": True}
            if method == "apps.connections.open":
                # Socket Mode: a WebSocket URL where nothing listens; the sandbox has no
                # Socket Mode server, it only records that the bot asked for one.
                return {"ok": True, "url": "ws://127.0.0.1:9/socket-mode-sandbox"}
            return {"ok": False, "error": "unknown_method"}

    # ---- reading what was sent -----------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def everything_sent(self) -> str:
        with self._lock:
            return "\n".join(f"{c.method} {c.dump()}" for c in self.calls)

    def channel_messages(self, channel: str) -> list[Message]:
        """Copies of the messages as they are now; a person may still click a stale one."""
        with self._lock:
            return [copy.deepcopy(m) for m in self.messages if m.channel == channel]

    def parent(self, channel: str) -> Message:
        return next(m for m in self.channel_messages(channel) if m.thread_ts is None)

    def thread(self, channel: str, ts: str) -> list[Message]:
        return [m for m in self.channel_messages(channel) if m.thread_ts == ts]

    def dms(self, user: str) -> list[Message]:
        return self.channel_messages("D" + user[1:])

    def ephemerals(self, user: str | None = None) -> list[str]:
        """Private replies through response_url (and chat.postEphemeral) to `user`."""
        out = []
        for c in self.calls:
            if c.method == "response_url" and (user is None or c.args.get("_user") == user):
                out.append(c.args.get("text", ""))
            elif c.method == "chat.postEphemeral" and (user is None or c.args.get("user") == user):
                out.append(c.args.get("text", ""))
        return out

    def views_opened(self) -> list[dict[str, Any]]:
        return [c.args["view"] for c in self.calls_to("views.open")]


def _decode(raw: str, content_type: str) -> dict[str, Any]:
    if "json" in content_type:
        args = json.loads(raw or "{}")
    else:
        args = {k: v[0] for k, v in parse_qs(raw).items()}
    for key in ("blocks", "view", "attachments"):
        if isinstance(args.get(key), str):
            try:
                args[key] = json.loads(args[key])
            except ValueError:
                pass
    if args.get("reply_broadcast") in ("true", "1", "True"):
        args["reply_broadcast"] = True
    return args


# ---- driving the bot as Slack would ----------------------------------------------------


class SlackDriver:
    """Sends the bot correctly signed requests, as Slack does, and follows what it opens."""

    def __init__(self, bot_url: str, signing_secret: str, fake: FakeSlack):
        self.bot_url = bot_url.rstrip("/") + "/slack/events"
        self.verifier = SignatureVerifier(signing_secret)
        self.fake = fake
        self._n = itertools.count(1)

    def post(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> requests.Response:
        ts = str(timestamp if timestamp is not None else int(time.time()))
        sig = signature or self.verifier.generate_signature(timestamp=ts, body=body)
        return requests.post(
            self.bot_url,
            data=body.encode(),
            headers={
                "Content-Type": content_type,
                "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": sig,
            },
            timeout=30,
        )

    def _response_url(self, user: str) -> str:
        return f"{self.fake.url}/respond/{user}/{next(self._n)}"

    def command(
        self, user: str, text: str = "", channel: str = "C0GENERAL", **kw: Any
    ) -> requests.Response:
        body = urlencode(
            {
                "token": "unused",
                "team_id": FakeSlack.TEAM,
                "channel_id": channel,
                "user_id": user,
                "user_name": user.lower(),
                "command": "/breakglass",
                "text": text,
                "trigger_id": f"trig.{next(self._n)}",
                "response_url": self._response_url(user),
                "api_app_id": "A0BREAKGLS",
            }
        )
        return self.post(body, "application/x-www-form-urlencoded", **kw)

    def _interaction(self, payload: dict[str, Any], **kw: Any) -> requests.Response:
        body = urlencode({"payload": json.dumps(payload)})
        return self.post(body, "application/x-www-form-urlencoded", **kw)

    def submit_view(
        self, user: str, view: dict[str, Any], values: dict[str, Any], **kw: Any
    ) -> requests.Response:
        """Submit `view` (as the bot opened it) with state `values`."""
        payload = {
            "type": "view_submission",
            "team": {"id": FakeSlack.TEAM},
            "user": {"id": user, "team_id": FakeSlack.TEAM},
            "api_app_id": "A0BREAKGLS",
            "trigger_id": f"trig.{next(self._n)}",
            "view": {**view, "id": f"V{next(self._n):08d}", "state": {"values": values}},
        }
        return self._interaction(payload, **kw)

    def click(self, user: str, message: Message, action_id: str, **kw: Any) -> requests.Response:
        """Click the button `action_id` in `message`, as `user`."""
        button = next(
            el
            for b in message.blocks
            if b.get("type") == "actions"
            for el in b["elements"]
            if el.get("action_id") == action_id
        )
        block_id = next(
            b.get("block_id")
            for b in message.blocks
            if b.get("type") == "actions" and button in b["elements"]
        )
        payload = {
            "type": "block_actions",
            "team": {"id": FakeSlack.TEAM},
            "user": {"id": user, "team_id": FakeSlack.TEAM},
            "api_app_id": "A0BREAKGLS",
            "trigger_id": f"trig.{next(self._n)}",
            "container": {
                "type": "message",
                "message_ts": message.ts,
                "channel_id": message.channel,
            },
            "channel": {"id": message.channel},
            "message": {"ts": message.ts, "text": message.text, "blocks": message.blocks},
            "response_url": self._response_url(user),
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id,
                    "value": button.get("value"),
                    "action_ts": str(time.time()),
                }
            ],
        }
        return self._interaction(payload, **kw)


def request_values(
    resource: str | None,
    duration: str | None,
    justification: str | None,
    ticket: str | None = None,
    emergency: bool = False,
) -> dict[str, Any]:
    """state.values of the request modal, as Slack sends them."""
    from bot.slack.ids import ActionId, BlockId

    return {
        BlockId.RESOURCE: {
            ActionId.RESOURCE: {
                "type": "static_select",
                "selected_option": {
                    "value": resource,
                    "text": {"type": "plain_text", "text": resource},
                }
                if resource
                else None,
            }
        },
        BlockId.DURATION: {ActionId.DURATION: {"type": "plain_text_input", "value": duration}},
        BlockId.JUSTIFICATION: {
            ActionId.JUSTIFICATION: {"type": "plain_text_input", "value": justification}
        },
        BlockId.TICKET: {ActionId.TICKET: {"type": "plain_text_input", "value": ticket}},
        BlockId.EMERGENCY: {
            ActionId.EMERGENCY: {
                "type": "checkboxes",
                "selected_options": [{"value": "emergency"}] if emergency else [],
            }
        },
    }


def deny_values(reason: str) -> dict[str, Any]:
    from bot.slack.ids import ActionId, BlockId

    return {
        BlockId.DENY_REASON: {ActionId.DENY_REASON: {"type": "plain_text_input", "value": reason}}
    }


# ---- showing a conversation as Slack would ------------------------------------------------

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)>")
_DATE = re.compile(r"<!date\^\d+\^[^|]*\|([^>]*)>")


def plain(text: str, names: dict[str, str]) -> str:
    text = _MENTION.sub(lambda m: "@" + names.get(m.group(1), m.group(1)), text)
    text = _DATE.sub(lambda m: m.group(1), text)
    text = text.replace("<!here>", "@here")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def render_blocks(blocks: list[dict[str, Any]], fallback: str, names: dict[str, str]) -> list[str]:
    if not blocks:
        return [plain(fallback, names)]
    out: list[str] = []
    for b in blocks:
        kind = b.get("type")
        if kind == "header":
            out.append(f"== {b['text']['text']} ==")
        elif kind == "section":
            out.append(plain(b.get("text", {}).get("text", ""), names))
        elif kind == "context":
            out.append(" ".join(plain(e.get("text", ""), names) for e in b.get("elements", [])))
        elif kind == "actions":
            out.append(" ".join(f"[{e['text']['text']}]" for e in b.get("elements", [])))
    return out
