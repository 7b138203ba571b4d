"""The whole bot on embedded parts: OpenBao, PostgreSQL, the Slack fake, served over HTTP.

`breakglass demo` and the tier-3 tests build on these same pieces.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from werkzeug.serving import make_server

from bot.policy import Policy, parse_policy
from bot.runtime import Runtime, build
from bot.sandbox.openbao import (
    OpenBaoServer,
    bot_token,
    configure_database_engine,
    free_port,
    wait_until_serving,
)
from bot.sandbox.postgres import EmbeddedPostgres
from bot.sandbox.serving import ServerThread
from bot.sandbox.slack_fake import FakeSlack, SlackDriver
from bot.service import utcnow
from bot.settings import Settings

SECURITY_CHANNEL = "C0SECURITY"
CAPPED_ROLE = "breakglass-capped"  # a Vault role whose max_ttl (5 min) is below the policy's
REQUESTER = "U0ALICE"
APPROVER = "U0BOB"
APPROVER_2 = "U0CAROL"
OUTSIDER = "U0MALLORY"
NAMES = {
    REQUESTER: "alice",
    APPROVER: "bob",
    APPROVER_2: "carol",
    OUTSIDER: "mallory",
    FakeSlack.BOT_USER: "breakglass",
}

POLICY = f"""\
security_channel: {SECURITY_CHANNEL}
approvers:
  sre-leads: [{APPROVER}, {APPROVER_2}]
  security: [{APPROVER_2}]
resources:
  prod-db:
    description: Production PostgreSQL, read/write
    provider: vault-database
    options: {{mount: database, role: breakglass-rw}}
    max_duration: 1h
    approvals: 1
    approvers: [sre-leads, security]
    emergency: true
  prod-db-two-keys:
    description: Production PostgreSQL, needs two approvers
    provider: vault-database
    options: {{mount: database, role: breakglass-rw}}
    max_duration: 30m
    approvals: 2
    approvers: [sre-leads]
    emergency: false
"""


@dataclass
class Backends:
    """OpenBao with the database engine configured against an embedded PostgreSQL."""

    pg: EmbeddedPostgres
    bao: OpenBaoServer
    bot_token: str

    @classmethod
    def start(cls) -> Backends:
        pg = EmbeddedPostgres().start()
        try:
            bao = OpenBaoServer().start()
        except Exception:
            pg.stop()
            raise
        try:
            configure_database_engine(
                bao.client(), pg, roles={"breakglass-rw": "24h", CAPPED_ROLE: "5m"}
            )
            token = bot_token(bao.client())
        except Exception:
            bao.stop()
            pg.stop()
            raise
        return cls(pg, bao, token)

    def stop(self) -> None:
        self.bao.stop()
        self.pg.stop()


class BotServer:
    """The bot's WSGI app on a loopback port, in a thread (threaded, like production)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self.server = make_server("127.0.0.1", 0, runtime.web, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._serving = ServerThread(self.server, "bot-server")

    def start(self) -> BotServer:
        self._serving.start()
        return self

    def stop(self) -> None:
        """Returns at once when idle; a request still in flight is waited for (werkzeug
        joins its threads), so the runtime is not stopped under a running listener."""
        self._serving.stop()


class Clock:
    """A clock the tests move by hand; starts at the real now."""

    def __init__(self) -> None:
        self.now = utcnow()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self.now += delta


@dataclass
class Bot:
    runtime: Runtime
    server: BotServer
    driver: SlackDriver
    signing_secret: str

    @property
    def service(self):  # type: ignore[no-untyped-def]
        return self.runtime.service

    def stop(self) -> None:
        self.server.stop()
        self.runtime.stop()


def start_bot(
    backends: Backends,
    slack: FakeSlack,
    database_url: str,
    *,
    policy_text: str = POLICY,
    clock: Callable[[], datetime] = utcnow,
    start_scheduler: bool = True,
    workdir: Path | None = None,
) -> Bot:
    """Build the bot as `breakglass serve` does, pointed at the embedded parts."""
    signing_secret = secrets.token_hex(16)
    policy: Policy = parse_policy(policy_text)
    settings = Settings(
        slack_bot_token="xoxb-sandbox-" + secrets.token_hex(8),
        slack_signing_secret=signing_secret,
        slack_api_url=slack.api_url,
        vault_addr=backends.bao.addr,
        vault_token=backends.bot_token,
        database_url=database_url,
        breakglass_config=(workdir or Path(".")) / "breakglass.yml",
    )
    runtime = build(settings, policy=policy, clock=clock, process_before_response=True)
    if start_scheduler:
        runtime.start()
    server = BotServer(runtime).start()
    return Bot(runtime, server, SlackDriver(server.url, signing_secret, slack), signing_secret)


class ServeProcess:
    """`breakglass serve` as its own process (gunicorn, as in production), pointed at the
    embedded parts through the environment contract."""

    def __init__(
        self, backends: Backends, slack: FakeSlack, workdir: Path, *, policy_text: str = POLICY
    ):
        self.signing_secret = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = f"sqlite:///{workdir / 'serve.db'}"
        policy = workdir / "breakglass.yml"
        policy.write_text(policy_text)
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "SLACK_APP_TOKEN"},
            "SLACK_BOT_TOKEN": "xoxb-sandbox-" + secrets.token_hex(8),
            "SLACK_SIGNING_SECRET": self.signing_secret,
            "SLACK_API_URL": slack.api_url,
            "VAULT_ADDR": backends.bao.addr,
            "VAULT_TOKEN": backends.bot_token,
            "DATABASE_URL": self.database_url,
            "BREAKGLASS_CONFIG": str(policy),
        }
        self.driver = SlackDriver(self.url, self.signing_secret, slack)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> ServeProcess:
        exe = str(Path(sys.executable).parent / "breakglass")
        self.process = subprocess.Popen(
            [exe, "serve", "--port", str(self.port), "--host", "127.0.0.1"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_until_serving(self.process, f"{self.url}/healthz", "breakglass serve", timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)
