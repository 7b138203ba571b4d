"""A loopback stand-in for the Slack Web API that records what the bot sends, and a driver
that talks to the bot the way Slack does: correctly signed HTTP requests."""

from __future__ import annotations

import copy
import itertools
import json
import re
import socket
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

import requests
from slack_sdk.signature import SignatureVerifier

from bot.sandbox.serving import ServerThread

# SO_LINGER on with 0 s: close() resets the connection.
_RESET = struct.pack("ii", 1, 0)


@dataclass
class Call:
    """One Web API call (or response_url post) the bot made, and how the fake answered it.

    Every attempt is kept, the faulted ones too, so a test can count retries: `status` is the
    HTTP status answered (0: none yet, a hung call, or none at all, a reset), `error` the
    Slack error of an `{"ok": false}` answer, `fault` names the scripted fault that met it
    (None when only the fake's Slack rules answered, which may still be an error:
    `message_not_found`, `not_in_channel`). `ok` says Slack did the work.
    """

    method: str
    args: dict[str, Any]
    token: str | None = None
    status: int = 0
    error: str | None = None
    fault: str | None = None
    response: dict[str, Any] | None = field(default=None, repr=False)
    at: float = field(default_factory=time.monotonic)  # when it arrived (monotonic clock)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

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
    files: list[str] = field(default_factory=list)  # ids of files shared with it


@dataclass
class _Fault:
    """A scripted answer for one method; `times` None means until cleared."""

    label: str
    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    hang: float = 0.0  # seconds to wait, then answer as usual
    reset: bool = False  # no answer at all: the connection is reset
    times: int | None = 1


@dataclass
class _Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # A hung answer must not hold up stop(); hangs are woken by stop() anyway.
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout test) leaves a broken pipe behind: expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeSlack:
    """Answers the Web API methods the bot uses; everything it receives is kept in `calls`.

    Faults are scripted per method and met in the order they were added:
    `fail("chat.postMessage", status=500, times=3)`, `fail(..., status=429, retry_after=1)`,
    `fail("views.open", error="expired_trigger_id")`, `hang("chat.update", seconds=5)`,
    `drop(method)` (connection reset, no answer), `outage()` for every method at once,
    `clear_faults()`. Set `bot_in_channel = False` and
    posts to channels answer `not_in_channel` until it is True again (or the bot joins);
    conversations.info then says `is_member: false` (a private G… channel: `channel_not_found`,
    as Slack hides private channels from bots outside them). Channels in `unknown_channels`
    do not exist: `channel_not_found` to every call naming them.

    Reading: `calls` holds every attempt; `calls_to(method)` only those Slack accepted
    (what people saw), `attempts_to(method)` all of them, faulted ones included. To assert
    that the bot did not even try, use `attempts_to`.
    """

    TEAM = "T0SANDBOX"
    BOT_USER = "U0BREAKGLS"

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: list[Message] = []
        self.views: dict[str, dict[str, Any]] = {}  # view id -> the view as it is now
        self.bot_in_channel = True
        self.unknown_channels: set[str] = set()
        self.channel_members: dict[str, list[str]] = {}
        # Files upload v2: file id -> {"filename", "length", "data" (once uploaded), "shared"}
        self.files: dict[str, dict[str, Any]] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._outage: int | None = None
        self._ts = itertools.count(1)
        self._lock = threading.Lock()
        self._released = threading.Event()  # set by stop(): wakes every hung answer
        self._server: ThreadingHTTPServer | None = None
        self._serving: ServerThread | None = None
        self.url = ""

    # ---- server -------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                if self.path.startswith("/upload/"):  # files upload v2: the bytes themselves
                    ok = fake._receive_upload(self.path.removeprefix("/upload/"), data)
                    self.send_response(200 if ok else 404)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"OK" if ok else b"NO")
                    return
                raw = data.decode()
                args = _decode(raw, self.headers.get("Content-Type", ""))
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ") or args.get("token")
                path = self.path.split("?", 1)[0]
                if path.startswith("/respond/"):
                    method = "response_url"
                    args["_user"] = path.split("/")[2]
                else:
                    method = path.removeprefix("/api/")
                answer = fake._attempt(method, args, token)
                if answer.reset:
                    # RST instead of FIN: the client sees "connection reset by peer".
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                    self.connection.close()
                    self.close_connection = True
                    return
                body = json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self._released.clear()
        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self._serving = ServerThread(self._server, "fake-slack").start()
        return self

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def stop(self) -> None:
        self._released.set()
        if self._serving:
            self._serving.stop()
            self._serving = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- scripting faults ----------------------------------------------------------------

    def fail(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: int | None = None,
        times: int | None = 1,
    ) -> None:
        """The next `times` calls to `method` (None: every call until `clear_faults`) answer
        HTTP `status` (500, 503, 429...) or, with status 200, `{"ok": false, "error": error}`.
        `retry_after` (seconds) adds a `Retry-After` header, as Slack sends with a 429;
        without it none is sent. Nothing the call asked for is done."""
        if status == 200 and error is None:
            raise ValueError("say what fails: an HTTP status other than 200, or an error")
        error = error or ("ratelimited" if status == 429 else "internal_error")
        label = f"HTTP {status} {error}" if status != 200 else error
        self._script(method, _Fault(label, status, error, retry_after, times=times))

    def hang(self, method: str, *, seconds: float, times: int | None = 1) -> None:
        """The next `times` calls to `method` wait `seconds` and then are answered and done
        as usual, as a slow Slack does: a client that gave up meanwhile may still have
        posted. `stop()` ends every wait at once."""
        self._script(method, _Fault(f"hang {seconds} s", hang=seconds, times=times))

    def drop(self, method: str, *, times: int | None = 1) -> None:
        """The next `times` calls to `method` get no answer: the connection is reset once
        the request is read (the client sees ECONNRESET). Nothing is done."""
        self._script(method, _Fault("connection reset", status=0, reset=True, times=times))

    def outage(self, on: bool = True, *, status: int = 500) -> None:
        """While on, every method (response_url posts too) answers HTTP `status`."""
        with self._lock:
            self._outage = status if on else None

    def clear_faults(self) -> None:
        """Drop every scripted fault and end an outage (calls already hanging keep waiting)."""
        with self._lock:
            self._faults.clear()
            self._outage = None

    def _script(self, method: str, fault: _Fault) -> None:
        if fault.times is not None and fault.times < 1:
            raise ValueError("times must be at least 1, or None for until cleared")
        with self._lock:
            self._faults.setdefault(method, deque()).append(fault)

    def _next_fault(self, method: str) -> _Fault | None:
        """The fault this attempt meets, if any, counted off its budget (lock held)."""
        if self._outage is not None:
            return _Fault("outage", self._outage, "internal_error", times=None)
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        if fault.times is not None:
            fault.times -= 1
            if fault.times == 0:
                queue.popleft()
        return fault

    # ---- answering -----------------------------------------------------------------------

    def _attempt(self, method: str, args: dict[str, Any], token: str | None) -> _Answer:
        with self._lock:
            call = Call(method, args, token)
            self.calls.append(call)  # at arrival, so a retry during a hang comes after it
            fault = self._next_fault(method)
            if fault is not None:
                call.fault = fault.label
            if fault is not None and fault.reset:
                return _Answer(0, {}, reset=True)
            if fault is not None and not fault.hang:
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                answer = _Answer(fault.status, {"ok": False, "error": fault.error}, headers)
                call.status, call.error, call.response = answer.status, fault.error, answer.body
                return answer
        if fault is not None:
            self._released.wait(fault.hang)
        with self._lock:
            body = self._answer(method, args)
            call.status, call.response = 200, body
            call.error = None if body.get("ok") else str(body.get("error"))
            return _Answer(200, body)

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """Slack's own answer to a call no fault met (lock held)."""
        named = str(args.get("channel") or args.get("channel_id") or "")
        if named in self.unknown_channels:
            return {"ok": False, "error": "channel_not_found"}
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
            elif channel.startswith(("C", "G")) and not self.bot_in_channel:
                return {"ok": False, "error": "not_in_channel"}
            ts = self._new_ts()
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
        if method in ("views.open", "views.push"):
            view = self._store_view(args.get("view") or {})
            return {"ok": True, "view": copy.deepcopy(view)}
        if method == "views.update":
            return self._update_view(args)
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self._new_ts()}
        if method == "conversations.info":
            channel = str(args.get("channel"))
            if channel.startswith("G") and not self.bot_in_channel:
                return {"ok": False, "error": "channel_not_found"}
            return {"ok": True, "channel": self._channel_info(channel)}
        if method == "conversations.members":
            channel = str(args.get("channel"))
            members = [u for u in self.channel_members.get(channel, []) if u != self.BOT_USER]
            if self.bot_in_channel:
                members.append(self.BOT_USER)
            return {"ok": True, "members": members, "response_metadata": {"next_cursor": ""}}
        if method == "conversations.join":
            self.bot_in_channel = True
            return {"ok": True, "channel": self._channel_info(str(args.get("channel")))}
        if method == "response_url":
            return {"ok": True}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._ts):07d}"
            self.files[file_id] = {
                "filename": args.get("filename"),
                "length": int(args.get("length") or 0),
                "data": None,
                "shared": None,
            }
            return {"ok": True, "file_id": file_id, "upload_url": f"{self.url}/upload/{file_id}"}
        if method == "files.completeUploadExternal":
            return self._complete_upload(args)
        if method == "apps.connections.open":
            # Socket Mode: a WebSocket URL where nothing listens; the sandbox has no
            # Socket Mode server, it only records that the bot asked for one.
            return {"ok": True, "url": "ws://127.0.0.1:9/socket-mode-sandbox"}
        return {"ok": False, "error": "unknown_method"}

    def _receive_upload(self, file_id: str, data: bytes) -> bool:
        with self._lock:
            self.calls.append(Call("upload", {"file_id": file_id, "bytes": len(data)}, None))
            entry = self.files.get(file_id)
            if entry is None:
                return False
            entry["data"] = data
            return True

    def _complete_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        """Share uploaded files in a channel (or a thread), with an optional comment."""
        files = args.get("files")
        if isinstance(files, str):
            files = json.loads(files)
        channel = str(args.get("channel_id") or "")
        shared = []
        for f in files or []:
            entry = self.files.get(str(f.get("id")))
            if entry is None or entry["data"] is None or len(entry["data"]) != entry["length"]:
                return {"ok": False, "error": "file_not_found"}
            if channel.startswith(("C", "G")) and not self.bot_in_channel:
                return {"ok": False, "error": "not_in_channel"}
            entry["shared"] = channel
            entry["title"] = f.get("title")
            shared.append({"id": f.get("id"), "title": f.get("title")})
        if channel:
            msg = Message(
                channel,
                self._new_ts(),
                args.get("initial_comment") or "",
                [],
                args.get("thread_ts"),
            )
            msg.files = [f["id"] for f in shared]
            self.messages.append(msg)
        return {"ok": True, "files": shared}

    def _new_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _store_view(self, view: dict[str, Any], view_id: str | None = None) -> dict[str, Any]:
        stored = {
            **view,
            "id": view_id or f"V{next(self._ts):08d}",
            "hash": f"{time.time():.6f}.{next(self._ts)}",
        }
        self.views[stored["id"]] = stored
        return stored

    def _update_view(self, args: dict[str, Any]) -> dict[str, Any]:
        view_id = args.get("view_id")
        if not view_id and args.get("external_id"):
            view_id = next(
                (
                    vid
                    for vid, v in self.views.items()
                    if v.get("external_id") == args["external_id"]
                ),
                None,
            )
        current = self.views.get(str(view_id)) if view_id else None
        if current is None:
            return {"ok": False, "error": "not_found"}
        if args.get("hash") and args["hash"] != current["hash"]:
            return {"ok": False, "error": "hash_conflict"}  # someone updated it meanwhile
        view = self._store_view(args.get("view") or {}, current["id"])
        return {"ok": True, "view": copy.deepcopy(view)}

    def _channel_info(self, channel: str) -> dict[str, Any]:
        is_dm = channel.startswith("D")
        return {
            "id": channel,
            "name": channel.lower(),
            "is_channel": channel.startswith("C"),
            "is_private": channel.startswith("G"),
            "is_im": is_dm,
            "is_member": is_dm or self.bot_in_channel,
        }

    def register_view(self, view: dict[str, Any]) -> str:
        """Give `view` an id as Slack would for a modal it shows (the driver uses this for
        views it submits that the bot did not open through this fake)."""
        with self._lock:
            return str(self._store_view(view)["id"])

    # ---- reading what was sent -----------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        """Calls to `method` that Slack accepted (`ok`): what people saw."""
        with self._lock:
            return [c for c in self.calls if c.method == method and c.ok]

    def attempts_to(self, method: str) -> list[Call]:
        """Every call to `method`, faulted or refused ones included: to count retries."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def everything_sent(self) -> str:
        """Every attempt: what reached Slack, even when Slack then answered an error."""
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
        """Private replies through response_url (and chat.postEphemeral) to `user` that
        Slack accepted."""
        with self._lock:
            calls = [c for c in self.calls if c.ok]
        out = []
        for c in calls:
            if c.method == "response_url" and (user is None or c.args.get("_user") == user):
                out.append(c.args.get("text", ""))
            elif c.method == "chat.postEphemeral" and (user is None or c.args.get("user") == user):
                out.append(c.args.get("text", ""))
        return out

    def views_opened(self) -> list[dict[str, Any]]:
        """Modals opened (views.open), as the bot sent them plus the `id` Slack gave them."""
        return [
            {**c.args["view"], "id": (c.response or {})["view"]["id"]}
            for c in self.calls_to("views.open")
        ]

    def views_updated(self) -> list[dict[str, Any]]:
        """Successful views.update calls' views, as the bot sent them, with their `view_id`."""
        return [
            {**c.args["view"], "id": c.args.get("view_id")} for c in self.calls_to("views.update")
        ]

    def view(self, view_id: str) -> dict[str, Any]:
        """The modal `view_id` as it is now (after every update), with its `hash`."""
        with self._lock:
            return copy.deepcopy(self.views[view_id])


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
        """Submit `view` (as the bot opened it) with state `values`; the submission carries
        the id Slack gave the view, as Slack's does."""
        view_id = view.get("id")
        if view_id not in self.fake.views:
            view_id = self.fake.register_view(view)
        payload = {
            "type": "view_submission",
            "team": {"id": FakeSlack.TEAM},
            "user": {"id": user, "team_id": FakeSlack.TEAM},
            "api_app_id": "A0BREAKGLS",
            "trigger_id": f"trig.{next(self._n)}",
            "view": {**view, "id": view_id, "state": {"values": values}},
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


def review_values(outcome: str | None, notes: str | None = None) -> dict[str, Any]:
    """state.values of the review modal, as Slack sends them."""
    from bot.slack.ids import ActionId, BlockId

    return {
        BlockId.REVIEW_OUTCOME: {
            ActionId.REVIEW_OUTCOME: {
                "type": "radio_buttons",
                "selected_option": {"value": outcome} if outcome else None,
            }
        },
        BlockId.REVIEW_NOTES: {ActionId.REVIEW_NOTES: {"type": "plain_text_input", "value": notes}},
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


def credential_fields(view: dict[str, Any]) -> dict[str, str]:
    """The fields a reveal modal shows (one section per field: *name* and a code block)."""
    fields = {}
    for b in view.get("blocks", []):
        text = b.get("text", {}).get("text", "") if b.get("type") == "section" else ""
        if "```" in text and "\n" in text:
            name, value = text.split("\n", 1)
            fields[name.strip("*")] = value.strip("`")
    return fields


def revealed(fake: FakeSlack, view_id: str) -> dict[str, str]:
    """What the reveal modal `view_id` shows now, after the bot filled it in."""
    updates = [v for v in fake.views_updated() if v["id"] == view_id]
    return credential_fields(updates[-1]) if updates else {}
