"""The whole bot on embedded parts: OpenBao, PostgreSQL, the Slack fake, served over HTTP.

`breakglass demo` and the tier-3 tests build on these same pieces.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
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
from bot.settings import Settings
from bot.usecases.ports import utcnow

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
    vault_addr: str | None = None,
    inline_outbox: bool = True,
    audit_signing_key: str | None = None,
    vault_token: str | None = None,
) -> Bot:
    """Build the bot as `breakglass serve` does, pointed at the embedded parts (Vault at
    `vault_addr` when given: a FaultProxy in front of the embedded OpenBao)."""
    signing_secret = secrets.token_hex(16)
    policy: Policy = parse_policy(policy_text)
    settings = Settings(
        slack_bot_token="xoxb-sandbox-" + secrets.token_hex(8),
        slack_signing_secret=signing_secret,
        slack_api_url=slack.api_url,
        vault_addr=vault_addr or backends.bao.addr,
        vault_token=vault_token or backends.bot_token,
        database_url=database_url,
        breakglass_config=(workdir or Path(".")) / "breakglass.yml",
        audit_signing_key=audit_signing_key,
    )
    runtime = build(
        settings,
        policy=policy,
        clock=clock,
        process_before_response=True,
        inline_outbox=inline_outbox,
    )
    if start_scheduler:
        runtime.start()
    server = BotServer(runtime).start()
    return Bot(runtime, server, SlackDriver(server.url, signing_secret, slack), signing_secret)


class ServeProcess:
    """`breakglass serve` as its own process (gunicorn, as in production), pointed at the
    embedded parts through the environment contract.

    Its output goes to `log_path` in `workdir` (read it with `log_text()`): a pipe nobody
    reads fills up on a long run and blocks the bot. `kill()` is a crash (SIGKILL to the
    master and its worker), `restart()` starts it again with the same environment and port.
    Two replicas of one app: `replica()`, or pass the same `signing_secret`, `bot_token`
    and `database_url` (a PostgreSQL one) to two instances.
    """

    def __init__(
        self,
        backends: Backends,
        slack: FakeSlack,
        workdir: Path,
        *,
        policy_text: str = POLICY,
        database_url: str | None = None,
        vault_addr: str | None = None,
        extra_env: dict[str, str] | None = None,
        signing_secret: str | None = None,
        bot_token: str | None = None,
    ):
        self.backends, self.slack, self.workdir = backends, slack, workdir
        self.policy_text = policy_text
        self.signing_secret = signing_secret or secrets.token_hex(16)
        self.bot_token = bot_token or "xoxb-sandbox-" + secrets.token_hex(8)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url or f"sqlite:///{workdir / 'serve.db'}"
        self.vault_addr = vault_addr or backends.bao.addr
        self.extra_env = dict(extra_env or {})
        self.log_path = workdir / f"serve-{self.port}.log"
        # gunicorn (since 24) opens a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl, else
        # ~/.gunicorn/gunicorn.ctl, and a new instance unlinks and takes over the previous
        # one's: every serve process here (and every other test run on the machine) would
        # share one. A runtime dir of its own keeps each process to itself.
        runtime_dir = workdir / f"run-{self.port}"
        runtime_dir.mkdir(mode=0o700, exist_ok=True)
        policy = workdir / "breakglass.yml"
        policy.write_text(policy_text)
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "SLACK_APP_TOKEN"},
            "SLACK_BOT_TOKEN": self.bot_token,
            "SLACK_SIGNING_SECRET": self.signing_secret,
            "SLACK_API_URL": slack.api_url,
            "VAULT_ADDR": self.vault_addr,
            "VAULT_TOKEN": backends.bot_token,
            "DATABASE_URL": self.database_url,
            "BREAKGLASS_CONFIG": str(policy),
            "XDG_RUNTIME_DIR": str(runtime_dir),
            **self.extra_env,
        }
        self.driver = SlackDriver(self.url, self.signing_secret, slack)
        self.process: subprocess.Popen | None = None

    def replica(self, workdir: Path | None = None) -> ServeProcess:
        """A second process of the same app: same secrets, database, Vault address, policy
        and extra environment; its own port (and log). Not started."""
        return ServeProcess(
            self.backends,
            self.slack,
            workdir or self.workdir,
            policy_text=self.policy_text,
            database_url=self.database_url,
            vault_addr=self.vault_addr,
            extra_env=self.extra_env,
            signing_secret=self.signing_secret,
            bot_token=self.bot_token,
        )

    def start(self, timeout: float = 30) -> ServeProcess:
        """Start (again, after `stop()` or `kill()`) on the same port; return once
        /healthz answers. RuntimeError with the process's output if it exits first."""
        if self.running:
            raise RuntimeError("breakglass serve is already running")
        exe = str(Path(sys.executable).parent / "breakglass")
        with self.log_path.open("ab") as log:
            if log.tell():
                log.write(b"\n==== started again ====\n")
                log.flush()
            offset = log.tell()
            self.process = subprocess.Popen(
                [exe, "serve", "--port", str(self.port), "--host", "127.0.0.1"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so kill() takes gunicorn's worker down with the
                # master, as a crash of the container would.
                start_new_session=True,
            )
        try:
            wait_until_serving(
                self.process,
                f"{self.url}/healthz",
                "breakglass serve",
                timeout,
                log=self.log_path,
                log_offset=offset,
            )
        except RuntimeError:
            self.kill()
            raise
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        """Everything the process wrote (every start), stdout and stderr together."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        """Graceful stop (SIGTERM, as an orchestrator sends); SIGKILL if it hangs."""
        if self.running:
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # whatever is left of the group: a worker that outlived its master

    def kill(self) -> None:
        """Crash it: SIGKILL to the whole process group, no clean-up of any kind."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        _wait_group_gone(self.process.pid, 10)

    def restart(self, timeout: float = 30) -> ServeProcess:
        """Stop gracefully if running, then start with the same environment and port."""
        self.stop()
        return self.start(timeout)


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")"
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """SIGKILL is delivered asynchronously: the worker may outlive the master's reaping."""
    deadline = time.monotonic() + timeout
    while _group_members(pgid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"process group {pgid} survived SIGKILL for {timeout} s")
        time.sleep(0.01)
