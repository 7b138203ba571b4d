"""Serving the bot: gunicorn with threads (HTTP) or Slack's Socket Mode."""

from __future__ import annotations

import logging
import signal

from gunicorn.app.base import BaseApplication

from bot.policy import Policy
from bot.runtime import build
from bot.settings import Settings

log = logging.getLogger(__name__)


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
        return runtime.web


def serve(
    settings: Settings, policy: Policy, *, port: int, host: str, migrate_db: bool, threads: int
) -> int:
    if settings.socket_mode:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        runtime = build(settings, policy=policy, migrate_db=migrate_db)
        runtime.start()

        def stop(*_: object) -> None:
            runtime.stop()
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, stop)
        log.info("serving in Socket Mode")
        assert settings.slack_app_token is not None
        SocketModeHandler(runtime.app, settings.slack_app_token.get_secret_value()).start()
        return 0
    options = {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 60,
        "graceful_timeout": 20,
        "accesslog": "-",
        "preload_app": False,
        # Two replicas on one host (or test runs) must not take over each other's socket.
        "control_socket_disable": True,
    }
    _Gunicorn(settings, policy, options, migrate_db).run()
    return 0
