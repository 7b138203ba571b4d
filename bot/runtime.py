"""Wiring: build the store, policy, Vault backend, notifier, scheduler, service and Slack app."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import Flask
from slack_bolt import App
from slack_sdk import WebClient

from bot import migrate
from bot.policy import Policy, load_policy
from bot.scheduler import Scheduler
from bot.settings import Settings
from bot.slack.app import create_app, create_web_app
from bot.slack.notifier import SlackNotifier
from bot.store import Store, create_db_engine
from bot.usecases import Breakglass
from bot.usecases.ports import utcnow
from providers import VaultBackend
from providers.vault import vault_client_from_env

log = logging.getLogger(__name__)


def _no_debug(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.INFO


def quiet_secret_loggers() -> None:
    """slack_sdk logs whole request bodies at DEBUG, and the reveal modal carries the
    credential: drop those records whatever level anyone sets later."""
    for name in ("slack_sdk.web.base_client", "slack_sdk.webhook.client", "urllib3"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if _no_debug not in logger.filters:
            logger.addFilter(_no_debug)


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    store: Store
    backend: VaultBackend
    service: Breakglass
    scheduler: Scheduler
    app: App
    web: Flask

    def health(self) -> dict:
        status = {"ok": True, "database": "ok"}
        try:
            with self.store.engine.connect() as c:
                c.execute(sa.text("SELECT 1"))
        except Exception:
            status.update(ok=False, database="unreachable")
        status["scheduler"] = "running" if self.scheduler.scheduler.running else "stopped"
        return status

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.shutdown()
        self.store.engine.dispose()


def build(
    settings: Settings,
    *,
    policy: Policy | None = None,
    migrate_db: bool = True,
    clock: Callable[[], datetime] = utcnow,
    process_before_response: bool = False,
    sweep_interval: timedelta = timedelta(seconds=60),
) -> Runtime:
    quiet_secret_loggers()
    policy = policy or load_policy(settings.breakglass_config)
    engine = create_db_engine(settings.database_url)
    if migrate_db:
        migrate.upgrade(engine)
    elif migrate.pending(engine):
        raise RuntimeError(
            "the database needs migrations (run `breakglass migrate`, or serve without "
            "--no-migrate)"
        )
    store = Store(engine)
    token = settings.vault_token.get_secret_value() if settings.vault_token else None
    backend = VaultBackend(vault_client_from_env(settings.vault_addr, token))
    bot_token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    client = WebClient(token=bot_token, base_url=settings.slack_base_url() or WebClient.BASE_URL)
    notifier = SlackNotifier(client, policy.security_channel, settings.vault_addr)
    scheduler = Scheduler(sweep_interval)
    service = Breakglass(store, policy, backend, notifier, timers=scheduler, clock=clock)
    scheduler.bind(service)
    secret = settings.slack_signing_secret
    app = create_app(
        service,
        client,
        signing_secret=secret.get_secret_value() if secret else None,
        process_before_response=process_before_response,
    )
    runtime = Runtime(settings, policy, store, backend, service, scheduler, app, None)  # type: ignore[arg-type]
    runtime.web = create_web_app(app, runtime.health)
    return runtime
