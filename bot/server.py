"""Serving the bot: gunicorn with threads (HTTP) or Slack's Socket Mode; SIGHUP reloads the
policy in both."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from bot.policy import Policy, PolicyError, load_policy
from bot.runtime import Runtime, build
from bot.settings import Settings

log = logging.getLogger(__name__)

# Probes and scrapes, every few seconds: their access lines are DEBUG, not INFO.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class GunicornLog(glogging.Logger):
    """gunicorn's error and access logs through the root's handler, in the process's one
    format (`bot.logs`), instead of handlers and formats of their own."""

    def setup(self, cfg: Any) -> None:
        self.cfg = cfg
        self._access_log_enabled = True
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
            logger.setLevel(logging.NOTSET)

    def access(self, resp: Any, req: Any, environ: dict, request_time: Any) -> None:
        """One line per request: method, path (never the query), status, time taken."""
        status = getattr(resp, "status_code", None) or str(resp.status).split(None, 1)[0]
        ms = round(request_time.total_seconds() * 1000, 1)
        self.access_log.log(
            logging.DEBUG if req.path in QUIET_PATHS else logging.INFO,
            "%s %s %s %s ms",
            req.method,
            req.path,
            status,
            ms,
            extra={
                "method": req.method,
                "path": req.path,
                "status": int(status) if str(status).isdigit() else str(status),
                "duration_ms": ms,
                "remote_addr": environ.get("REMOTE_ADDR"),
            },
        )


def on_hangup(reload: Callable[[], object]) -> None:
    """SIGHUP reloads the policy: in a thread of its own, not inside the signal handler
    (which interrupts whatever the main thread holds)."""

    def handler(*_: object) -> None:
        threading.Thread(target=reload, name="policy-reload", daemon=True).start()

    signal.signal(signal.SIGHUP, handler)
    signal.siginterrupt(signal.SIGHUP, False)


class _Arbiter(Arbiter):
    """gunicorn's master. Its SIGHUP would start new workers with the policy the master
    holds (the one read at start); here it validates the file and, only if it is good,
    hands the reload to the workers, which swap the policy in place."""

    def handle_hup(self) -> None:
        app: _Gunicorn = self.app
        path = app.settings.breakglass_config
        log.info("SIGHUP: reloading the policy from %s", path)
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            for problem in exc.problems:
                log.error("policy reload refused: %s", problem)
            log.error(
                "policy reload refused: %s problem(s) in %s; the running policy stays",
                len(exc.problems),
                path,
            )
            return
        app.policy = policy  # a worker booted from now on starts with it
        for pid in list(self.WORKERS):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)


class _Gunicorn(BaseApplication):
    """One worker process with many threads: the scheduler lives in exactly one process."""

    def __init__(self, settings: Settings, policy: Policy, options: dict, migrate_db: bool):
        self.settings = settings
        self.policy = policy
        self.options = options
        self.migrate_db = migrate_db
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):  # type: ignore[no-untyped-def]
        runtime = build(self.settings, policy=self.policy, migrate_db=self.migrate_db)
        runtime.start()
        # In the worker (gunicorn set its signals to their defaults: HUP would end it).
        on_hangup(runtime.reload_policy)
        return runtime.web

    def run(self) -> None:
        # BaseApplication.run, with our master.
        try:
            _Arbiter(self).run()
        except RuntimeError as exc:
            print(f"\nError: {exc}\n", file=sys.stderr)
            sys.stderr.flush()
            sys.exit(1)


def _pid_file(path: Path | None) -> None:
    """Socket Mode: our pid where `breakglass reload` looks (gunicorn writes its own)."""
    if path is None:
        return
    try:
        path.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        log.warning("cannot write the pid file %s: %s", path, exc.strerror)
        return

    def remove() -> None:
        with contextlib.suppress(OSError):
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()

    atexit.register(remove)


def socket_mode(runtime: Runtime, settings: Settings) -> int:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    def stop(*_: object) -> None:
        runtime.stop()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    on_hangup(runtime.reload_policy)
    _pid_file(settings.breakglass_pid_file)
    log.info("serving in Socket Mode")
    assert settings.slack_app_token is not None
    SocketModeHandler(runtime.app, settings.slack_app_token.get_secret_value()).connect()
    # The main thread waits in short steps rather than on one long wait (which is what the
    # handler's start() does): Python runs signal handlers in the main thread only, between
    # two steps, whichever thread the kernel handed the signal to.
    while True:
        time.sleep(0.2)


def serve(
    settings: Settings, policy: Policy, *, port: int, host: str, migrate_db: bool, threads: int
) -> int:
    if settings.socket_mode:
        runtime = build(settings, policy=policy, migrate_db=migrate_db)
        runtime.start()
        return socket_mode(runtime, settings)
    options = {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 60,
        "graceful_timeout": 20,
        "accesslog": "-",
        "logger_class": GunicornLog,
        "preload_app": False,
        # Two replicas on one host (or test runs) must not take over each other's socket.
        "control_socket_disable": True,
    }
    if settings.breakglass_pid_file is not None:
        options["pidfile"] = str(settings.breakglass_pid_file)
    _Gunicorn(settings, policy, options, migrate_db).run()
    return 0
