"""Exporting and forwarding the audit trail: `audit export` (JSON Lines, CSV, bounds), and
live forwarding to a signed webhook and to syslog (RFC 5424 over TCP and UDP), against
receivers on loopback that go down and come back while the bot runs real flows."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import socket
import socketserver
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from bot import cli
from bot.domain.workflow import Event
from bot.forward.syslog import format_5424, octet_counted
from bot.forward.webhook import body_of, retry_after, signature
from bot.sandbox.serving import ServerThread
from bot.sandbox.stack import APPROVER, POLICY, start_bot
from bot.slack.ids import ActionId
from bot.store import Store, audit, audit_stream, create_db_engine, cursors
from bot.usecases.forwarding import Backoff
from tests.helpers import click, request_access, wait_for

SECRET = "test-webhook-secret-" + "x" * 16
SECRET_ENV = "BG_TEST_WEBHOOK_SECRET"
both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


# ---- receivers on loopback ------------------------------------------------------------------


class WebhookReceiver:
    """A SIEM's webhook: checks the signature and the seq header, records the events. Can be
    down (nothing listens), answer a scripted status, or hold requests until released."""

    def __init__(self, secret: str = SECRET):
        self.secret = secret.encode()
        self.events: list[dict[str, Any]] = []
        self.bad: list[str] = []  # what the receiver refused, and why
        self.script: list[int] = []  # statuses to answer before taking events again
        self.posts = 0
        self.hold: threading.Event | None = None
        self.held = threading.Semaphore(0)
        self._lock = threading.Lock()
        self.port = 0
        self._serving: ServerThread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/breakglass"

    def up(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.posts += 1
                    hold = receiver.hold
                if hold is not None:
                    receiver.held.release()
                    hold.wait(20)
                status, retry = receiver.take(body, self.headers)
                self.send_response(status)
                if retry:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_port
        self._serving = ServerThread(server, "webhook-receiver").start()
        return self

    def take(self, body: bytes, headers: Any) -> tuple[int, bool]:
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get("X-Breakglass-Signature", ""), expected):
            self.bad.append("signature")
            return 401, False
        with self._lock:
            if self.script:
                status = self.script.pop(0)
                return status, status in (429, 503)
            events = json.loads(body)
            first, last = events[0]["seq"], events[-1]["seq"]
            if headers["X-Breakglass-Seq"] != (str(first) if first == last else f"{first}-{last}"):
                self.bad.append(f"seq header {headers['X-Breakglass-Seq']}")
                return 400, False
            self.events.extend(events)
        return 200, False

    def down(self) -> None:
        if self._serving is not None:
            self._serving.stop()
            self._serving.server.server_close()
            self._serving = None

    def seqs(self) -> list[int]:
        with self._lock:
            return [e["seq"] for e in self.events]


_SYSLOG = re.compile(
    rb"^<(?P<pri>[0-9]{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    rb'(?P<msgid>\S+) \[meta sequenceId="(?P<seq>[0-9]+)"\] (?P<msg>.*)$',
    re.DOTALL,
)


def parse_5424(message: bytes) -> dict[str, Any]:
    """An RFC 5424 message as the bot writes them; fails the test on anything else."""
    m = _SYSLOG.match(message)
    assert m, f"not RFC 5424: {message[:120]!r}"
    parts = {k: v.decode("ascii") for k, v in m.groupdict().items()}
    parts["event"] = json.loads(parts.pop("msg"))
    return parts


def read_octet_counted(stream: io.BufferedIOBase) -> list[bytes]:
    """RFC 6587 octet counting: MSG-LEN SP SYSLOG-MSG, until the end of the stream."""
    out = []
    while True:
        length = b""
        while (c := stream.read(1)) not in (b" ", b""):
            assert c.isdigit(), f"bad frame length byte {c!r}"
            length += c
        if not length:
            return out
        frame = stream.read(int(length))
        assert len(frame) == int(length), "a frame cut short"
        out.append(frame)


class SyslogReceiver:
    """A syslog server on loopback, TCP (octet counting, reads to end of stream, then closes)
    or UDP (a datagram per message); records each message parsed."""

    def __init__(self, protocol: str):
        self.protocol = protocol
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.port = 0
        self._serving: ServerThread | None = None
        self._udp: socket.socket | None = None
        self._udp_thread: threading.Thread | None = None

    def _record(self, frame: bytes) -> None:
        parsed = parse_5424(frame)
        with self._lock:
            self.messages.append(parsed)

    def up(self) -> SyslogReceiver:
        if self.protocol == "udp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            self.port = sock.getsockname()[1]
            self._udp = sock

            def serve() -> None:
                while True:
                    try:
                        data = sock.recv(65535)
                    except OSError:
                        return
                    self._record(data)

            self._udp_thread = threading.Thread(target=serve, daemon=True)
            self._udp_thread.start()
            return self
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for frame in read_octet_counted(self.rfile):
                    receiver._record(frame)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._serving = ServerThread(server, "syslog-receiver").start()
        return self

    def down(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp_thread.join(5)  # type: ignore[union-attr]
            self._udp = None
        if self._serving is not None:
            self._serving.stop()
            self._serving.server.server_close()
            self._serving = None

    def seqs(self) -> list[int]:
        with self._lock:
            return [int(m["seq"]) for m in self.messages]


# ---- the bot --------------------------------------------------------------------------------


def forward_policy(*sinks: str) -> str:
    return POLICY + "audit:\n  forward:\n" + "".join(sinks)


def webhook_sink(receiver: WebhookReceiver, name: str = "siem", timeout: str = "10s") -> str:
    return (
        f"    - name: {name}\n"
        f"      webhook: {{url: '{receiver.url}', secret_env: {SECRET_ENV}, timeout: {timeout}}}\n"
    )


def syslog_sink(receiver: SyslogReceiver, name: str) -> str:
    return (
        f"    - name: {name}\n"
        f"      syslog: {{host: 127.0.0.1, port: {receiver.port}, protocol: "
        f"{receiver.protocol}, app_name: bg-test, facility: local3}}\n"
    )


def quick(bot: Any) -> None:
    """Backoff in tenths of seconds, so outages in tests end quickly."""
    for w in bot.runtime.forwarders.workers:
        w.backoff = Backoff(first=0.05, cap=0.3, refused=0.5)
        w.poll = 0.5


def exported(bot: Any) -> list[dict[str, Any]]:
    return list(audit_stream.events(bot.runtime.store))


def grant_flow(bot: Any, slack: Any, user: str) -> None:
    """A request approved and issued: requested, approved, issued, delivered."""
    parent = request_access(bot, slack, user=user)
    click(bot, APPROVER, parent, ActionId.APPROVE)


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.fixture
def webhook() -> Any:
    receiver = WebhookReceiver().up()
    yield receiver
    receiver.down()


@pytest.fixture
def tcp_syslog() -> Any:
    receiver = SyslogReceiver("tcp").up()
    yield receiver
    receiver.down()


@pytest.fixture
def udp_syslog() -> Any:
    receiver = SyslogReceiver("udp").up()
    yield receiver
    receiver.down()


# ---- formats, exactly -----------------------------------------------------------------------

EVENT = {
    "seq": 42,
    "at": "2026-03-01T12:34:56.789012+00:00",
    "actor": "U0ALICE",
    "action": "requested",
    "request_id": 7,
    "details": {"resource": "prod-db", "why": "café <&>"},
    "prev_hash": "a" * 64,
    "hash": "b" * 64,
}


def test_syslog_message_is_rfc5424_byte_for_byte():
    message = format_5424(EVENT, facility=19, hostname="bot-1", app_name="breakglass", procid="9")
    body = json.dumps(EVENT, ensure_ascii=True, separators=(",", ":")).encode()
    # local3 (19) * 8 + notice (5) = 157
    assert message == (
        b'<157>1 2026-03-01T12:34:56.789012Z bot-1 breakglass 9 requested [meta sequenceId="42"] '
        + body
    )
    assert message.isascii() and b"caf\\u00e9" in message
    assert octet_counted(message) == str(len(message)).encode() + b" " + message
    tamper = format_5424(
        {**EVENT, "action": "reveal_tamper", "at": "2026-03-01T13:34:56+01:00"},
        facility=4,
        hostname="host with space",
        app_name="",
        procid="9",
    )
    # auth (4) * 8 + warning (4) = 36; the time in UTC; bad header fields made valid
    assert tamper.startswith(
        b"<36>1 2026-03-01T12:34:56.000000Z host_with_space - 9 reveal_tamper "
        b'[meta sequenceId="42"] {'
    )


def test_webhook_body_and_signature_are_what_receivers_check():
    body = body_of([EVENT])
    assert json.loads(body) == [EVENT]
    expected = hmac.new(b"k" * 32, body, hashlib.sha256).hexdigest()
    assert signature(b"k" * 32, body) == f"sha256={expected}"
    assert retry_after("12") == 12.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: now
    assert retry_after("soon") is None and retry_after(None) is None


# ---- check-config ---------------------------------------------------------------------------


@pytest.mark.faults
def test_bad_forward_entries_are_check_config_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("BG_NOT_SET", raising=False)
    policy = tmp_path / "breakglass.yml"
    policy.write_text(
        POLICY
        + """audit:
  forward:
    - name: both
      webhook: {url: 'https://siem.example.com/x', secret_env: BG_NOT_SET}
      syslog: {host: logs.example.com}
    - name: neither
    - name: bad-url
      webhook: {url: 'siem.example.com/x', secret_env: BG_NOT_SET}
    - name: no-secret
      webhook:
        url: https://siem.example.com/x
        secret_env: BG_NOT_SET
"""
    )
    monkeypatch.setenv("BREAKGLASS_CONFIG", str(policy))
    assert cli.main(["check-config", "--policy-only"]) == 1
    err = capsys.readouterr().err
    assert f"{policy}:24: audit.forward.0: give exactly one of webhook: or syslog:" in err
    assert f"{policy}:27: audit.forward.1: give exactly one of webhook: or syslog:" in err
    assert f"{policy}:29: audit.forward.2.webhook.url: 'siem.example.com/x' is not an http" in err
    assert (
        f"{policy}:33: audit.forward.3.webhook.secret_env: the environment variable BG_NOT_SET "
        "is not set" in err
    )
    assert "Traceback" not in err


# ---- export ---------------------------------------------------------------------------------


def fill(store: Store, start: datetime, n: int) -> None:
    """`n` events an hour apart from `start`, through the chain's own append."""
    with store.transaction() as s:
        audit.append_many(
            s,
            [
                audit.NewEvent(
                    start + timedelta(hours=i),
                    "U0ALICE",
                    Event.REQUESTED,
                    i % 3 or None,
                    {"i": i, "text": 'a "quoted", multi\nline value'},
                )
                for i in range(n)
            ],
        )


@pytest.fixture
def filled(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Store:
    from bot import migrate

    engine = create_db_engine(database_url)
    migrate.upgrade(engine)
    store = Store(engine)
    fill(store, datetime(2026, 3, 1, tzinfo=UTC), 10)
    monkeypatch.setenv("DATABASE_URL", database_url)
    yield store
    engine.dispose()


@both_databases
def test_export_streams_what_audit_export_yields_between_bounds(filled, tmp_path, capsys):
    with filled.read() as s:
        everything = list(audit.export(s))
    assert list(audit_stream.events(filled)) == everything
    assert list(audit_stream.events(filled, batch=3)) == everything, "pages join up"
    assert list(audit_stream.events(filled, request_id=1, batch=2)) == [
        e for e in everything if e["request_id"] == 1
    ]

    out = tmp_path / "trail.jsonl"
    args = ["audit", "export", "--since", "2026-03-01T02:00", "--until", "2026-03-01T05:00"]
    assert cli.main([*args, "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert [json.loads(line) for line in lines] == everything[2:5]
    assert list(json.loads(lines[0])) == list(everything[2]), "the event's own key order"
    assert not (tmp_path / "trail.jsonl.partial").exists()

    assert cli.main(["audit", "export", "--format", "csv", "--since", "2026-03-01T08:00"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out, newline="")))
    assert rows[0] == list(audit_stream.CSV_COLUMNS)
    assert len(rows) == 1 + 2
    seq, at, actor, action, request_id, details, details_hash, prev, hash_ = rows[1]
    ev = everything[8]
    assert (int(seq), at, actor, action, prev, hash_) == (
        ev["seq"],
        ev["at"],
        ev["actor"],
        ev["action"],
        ev["prev_hash"],
        ev["hash"],
    )
    assert request_id == str(ev["request_id"] or "")
    assert details == audit.canonical(ev["details"]) and json.loads(details) == ev["details"]
    assert details_hash == (ev.get("details_hash") or "")


@pytest.mark.faults
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--since", "yesterday"], "'yesterday' is not a time; write a duration ago"),
        (["--until", "2026-02-30"], "'2026-02-30' is not a valid date or time"),
        (["--since", "2026-03-02", "--until", "2026-03-01"], "--since (2026-03-02T00:00:00"),
        (["--since", "9" * 50], "is not a time"),
    ],
)
def test_export_bad_bounds_get_one_precise_line(args, says, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    assert cli.main(["audit", "export", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("breakglass audit export: ") and says in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ---- forwarding -----------------------------------------------------------------------------


@pytest.mark.faults
@both_databases
def test_receivers_down_and_back_get_every_event_once_in_order(
    backends, slack, database_url, tmp_path, secret_env, webhook, tcp_syslog
):
    policy = forward_policy(webhook_sink(webhook), syslog_sink(tcp_syslog, "central"))
    bot = start_bot(backends, slack, database_url, policy_text=policy, workdir=tmp_path)
    try:
        quick(bot)
        grant_flow(bot, slack, "U0REQ1")
        wait_for(lambda: len(webhook.seqs()) == len(tcp_syslog.seqs()) == len(exported(bot)))

        webhook.down()
        tcp_syslog.down()
        grant_flow(bot, slack, "U0REQ2")
        wait_for(lambda: all(st.failing_since for st in sink_status(bot)))
        # Slack goes down too: what people do still reaches the SIEM.
        parent = request_access(bot, slack, user="U0REQ3")
        webhook.script = [503, 429, 500]
        webhook.up()
        tcp_syslog.up()
        slack.outage(True)
        bot.driver.click(APPROVER, parent, ActionId.APPROVE)
        wait_for(lambda: "approved" in [e["action"] for e in webhook.events])
        slack.outage(False)

        grant_flow(bot, slack, "U0REQ4")
        trail = exported(bot)
        wait_for(lambda: len(webhook.seqs()) >= len(trail) and len(tcp_syslog.seqs()) >= len(trail))
        assert webhook.seqs() == list(range(1, len(trail) + 1)), "each once, in order"
        assert webhook.events == trail
        assert not webhook.bad and not webhook.script
        assert tcp_syslog.seqs() == webhook.seqs()
        for message, event in zip(tcp_syslog.messages, trail, strict=True):
            assert message["event"] == event
            assert message["msgid"] == event["action"] and message["app"] == "bg-test"
            assert message["procid"] == str(os.getpid())
            assert int(message["pri"]) in (19 * 8 + 5, 19 * 8 + 4)
        # The cursors commit right after the receivers took the events.
        wait_for(lambda: all(st.lag == 0 and not st.failing_since for st in sink_status(bot)))
    finally:
        bot.stop()


def sink_status(bot: Any) -> list[cursors.SinkStatus]:
    names = [w.name for w in bot.runtime.forwarders.workers]
    with bot.runtime.store.engine.connect() as c:
        return cursors.status(c, names)


@pytest.mark.faults
def test_udp_syslog_in_order_never_twice_and_on_again_after_an_outage(
    backends, slack, database_url, tmp_path, udp_syslog
):
    bot = start_bot(
        backends,
        slack,
        database_url,
        policy_text=forward_policy(syslog_sink(udp_syslog, "udp")),
        workdir=tmp_path,
    )
    try:
        quick(bot)
        grant_flow(bot, slack, "U0REQ1")
        first = len(exported(bot))
        wait_for(lambda: udp_syslog.seqs() == list(range(1, first + 1)))
        udp_syslog.down()
        grant_flow(bot, slack, "U0REQ2")
        udp_syslog.up()
        # UDP has no acknowledgement: what was sent while nobody listened may be lost (see
        # the README); what is written once it listens again arrives, in order, once.
        before = len(exported(bot))
        wait_for(lambda: sink_status(bot)[0].lag == 0)
        grant_flow(bot, slack, "U0REQ3")
        trail = exported(bot)
        wait_for(lambda: udp_syslog.seqs()[-1:] == [len(trail)])
        got = udp_syslog.seqs()
        assert got == sorted(set(got)), "in order, never twice"
        assert set(range(before + 1, len(trail) + 1)) <= set(got)
        assert [m["event"] for m in udp_syslog.messages] == [trail[s - 1] for s in got]
    finally:
        bot.stop()


@pytest.mark.faults
@both_databases
def test_restart_resumes_from_the_cursor(
    backends, slack, database_url, tmp_path, secret_env, webhook
):
    policy = forward_policy(webhook_sink(webhook))
    first = start_bot(backends, slack, database_url, policy_text=policy, workdir=tmp_path)
    quick(first)
    grant_flow(first, slack, "U0REQ1")
    sent = len(exported(first))
    wait_for(lambda: len(webhook.seqs()) == sent)
    first.stop()

    webhook.down()
    second = start_bot(backends, slack, database_url, policy_text=policy, workdir=tmp_path)
    quick(second)
    grant_flow(second, slack, "U0REQ2")
    wait_for(lambda: sink_status(second)[0].failing_since)
    second.stop()
    assert sink_status(second)[0].seq == sent, "nothing counted as sent while it was down"

    webhook.up()
    third = start_bot(backends, slack, database_url, policy_text=policy, workdir=tmp_path)
    try:
        quick(third)
        trail = exported(third)
        assert len(trail) > sent
        wait_for(lambda: len(webhook.seqs()) >= len(trail))
        assert webhook.seqs() == list(range(1, len(trail) + 1))
        assert webhook.events == trail
    finally:
        third.stop()


@pytest.mark.faults
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_bots_on_one_postgresql_never_both_send(
    backends, slack, database_url, tmp_path, secret_env, webhook
):
    policy = forward_policy(webhook_sink(webhook, timeout="30s"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_bot(backends, slack, database_url, policy_text=policy, workdir=tmp_path / "a")
    b = start_bot(backends, slack, database_url, policy_text=policy, workdir=tmp_path / "b")
    try:
        quick(a)
        quick(b)
        # The receiver holds the first POST: one bot's forwarder now holds the sink's row.
        webhook.hold = threading.Event()
        grant_flow(a, slack, "U0REQ1")
        assert webhook.held.acquire(timeout=15)
        grant_flow(b, slack, "U0REQ2")  # wakes b's forwarder while the row is held
        # Both forwarders, asked to send now, find the sink taken and send nothing.
        for bot in (a, b):
            assert bot.runtime.forwarders.workers[0].send_once() == 0
        assert webhook.posts == 1
        webhook.hold.set()
        webhook.hold = None
        grant_flow(a, slack, "U0REQ3")
        grant_flow(b, slack, "U0REQ4")
        trail = exported(a)
        wait_for(lambda: len(webhook.seqs()) >= len(trail))
        assert webhook.seqs() == list(range(1, len(trail) + 1)), "each once, in order"
        assert webhook.events == trail
    finally:
        a.stop()
        b.stop()


@pytest.mark.faults
def test_refused_events_are_loud_retried_and_never_skipped(
    backends, slack, database_url, tmp_path, secret_env, webhook, caplog
):
    caplog.set_level(logging.WARNING, logger="bot.usecases.forwarding")
    bot = start_bot(
        backends,
        slack,
        database_url,
        policy_text=forward_policy(webhook_sink(webhook)),
        workdir=tmp_path,
    )
    try:
        quick(bot)
        webhook.script = [401] * 3
        grant_flow(bot, slack, "U0REQ1")
        wait_for(lambda: any("refused" in r.getMessage() for r in caplog.records))
        refused = next(r for r in caplog.records if "refused" in r.getMessage())
        assert refused.levelno == logging.ERROR
        assert "audit sink siem refused events 1-" in refused.getMessage()
        assert (
            "HTTP 401" in refused.getMessage() and "check its configuration" in refused.getMessage()
        )
        assert str(webhook.port) not in caplog.text and SECRET not in caplog.text

        ready = requests.get(f"{bot.server.url}/readyz", timeout=5).json()
        assert ready["forwarding"]["siem"].startswith("failing since")
        assert "HTTP 401" in ready["forwarding"]["siem"]
        text = requests.get(f"{bot.server.url}/metrics", timeout=5).text
        assert 'breakglass_forward_failing{sink="siem"} 1.0' in text
        assert re.search(r'breakglass_forward_lag_events\{sink="siem"\} [1-9]', text)

        trail = exported(bot)
        wait_for(lambda: len(webhook.seqs()) >= len(trail), timeout=30)
        assert webhook.seqs() == list(range(1, len(trail) + 1))
        # The cursor commits right after the receiver's 200.
        wait_for(
            lambda: (
                'breakglass_forward_lag_events{sink="siem"} 0.0'
                in requests.get(f"{bot.server.url}/metrics", timeout=5).text
            )
        )
    finally:
        bot.stop()


@pytest.mark.faults
def test_a_sink_added_with_start_now_skips_the_history(
    backends, slack, database_url, tmp_path, secret_env, webhook
):
    first = start_bot(backends, slack, database_url, workdir=tmp_path)
    grant_flow(first, slack, "U0REQ1")
    history = len(exported(first))
    first.stop()
    policy = forward_policy(webhook_sink(webhook, name="late") + "      start: now\n")
    bot = start_bot(backends, slack, database_url, policy_text=policy, workdir=tmp_path)
    try:
        grant_flow(bot, slack, "U0REQ2")
        trail = exported(bot)
        wait_for(lambda: len(webhook.seqs()) >= len(trail) - history)
        assert webhook.seqs() == list(range(history + 1, len(trail) + 1))
    finally:
        bot.stop()


def test_the_readme_signature_snippet_verifies_a_real_post(webhook):
    """The receiver's check in the README, run on the bytes a real sender POSTs."""
    from bot.forward.webhook import WebhookSender
    from bot.policy import WebhookSink

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    snippet = re.search(r"```python\n(# verify-breakglass-signature.*?)```", readme, re.DOTALL)
    assert snippet, "the README shows how to verify the signature"
    namespace: dict[str, Any] = {}
    exec(snippet.group(1), namespace)  # noqa: S102  (our own README)
    got: list[tuple[bytes, str]] = []
    original = webhook.take

    def keep(body: bytes, headers: Any) -> tuple[int, bool]:
        got.append((body, headers["X-Breakglass-Signature"]))
        return original(body, headers)

    webhook.take = keep  # type: ignore[method-assign]
    WebhookSender(WebhookSink(url=webhook.url, secret_env="X"), SECRET.encode()).send([EVENT])
    body, header = got[0]
    assert namespace["verify"](body, header, SECRET.encode())
    assert not namespace["verify"](body + b" ", header, SECRET.encode())
