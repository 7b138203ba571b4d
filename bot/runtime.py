"""Wiring: build the store, policy, Vault backend, notifier, scheduler, service and Slack app."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import Flask
from slack_bolt import App
from slack_sdk import WebClient

from bot import metrics, migrate
from bot.logmask import quiet_secret_loggers
from bot.policy import Policy, PolicyError, load_policy
from bot.scheduler import Scheduler
from bot.settings import Settings
from bot.slack.app import create_app, create_web_app
from bot.slack.client import make_client
from bot.slack.notifier import SlackNotifier
from bot.store import Store, create_db_engine
from bot.usecases import Breakglass
from bot.usecases.effects import OutboxWorker
from bot.usecases.forwarding import Forwarder, Forwarders
from bot.usecases.ports import utcnow
from providers import ProviderError, VaultBackend
from providers.auth import vault_auth_from_env
from providers.transit import Sealer

__all__ = ["Runtime", "build", "quiet_secret_loggers"]

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    store: Store
    backend: VaultBackend
    service: Breakglass
    scheduler: Scheduler
    app: App
    web: Flask

    client: WebClient | None = None
    _ready_cache: tuple[float, dict] | None = None
    forwarders: Forwarders | None = None
    _started: bool = False
    _reloading: threading.Lock = field(default_factory=threading.Lock)

    @property
    def policy(self) -> Policy:
        """The policy in force (`reload_policy` replaces it)."""
        return self.service.policy

    def reload_policy(self) -> bool:
        """Read the policy file again and put it in force: validated first; a file with
        problems is refused (each problem logged with its file:line) and the running policy
        stays. True when the new policy is in force."""
        path = self.settings.breakglass_config
        with self._reloading:
            try:
                new = load_policy(path)
            except PolicyError as exc:
                for problem in exc.problems:
                    log.error("policy reload refused: %s", problem)
                log.error(
                    "policy reload refused: %s problem(s) in %s; the running policy stays",
                    len(exc.problems),
                    path,
                )
                return False
            old = self.service.core.policies.swap(new)
            self._apply(old, new)
        log.info("policy reloaded from %s: %s", path, policy_changes(old, new))
        return True

    def _apply(self, old: Policy, new: Policy) -> None:
        """What was built from the policy at start, brought in line with the new one."""
        self.scheduler.schedule_policy_jobs()
        core = self.service.core
        if new.audit.encrypt != old.audit.encrypt:
            core.sealer = Sealer(self.backend.client, new.audit.encrypt)
        if new.audit.forward != old.audit.forward:
            previous = self.forwarders
            self.forwarders = forwarders_for(self.store, new)
            core.on_audit = self.forwarders.wake
            if previous is not None:
                previous.stop()
            if self._started:
                self.forwarders.start()

    def live(self) -> dict:
        """Liveness: the process answers and its timers run."""
        running = self.scheduler.scheduler.running
        return {"ok": True, "scheduler": "running" if running else "stopped"}

    def ready(self) -> dict:
        """Readiness: can the bot do its job now? Each part with its reason; cached briefly so
        a probe every second costs Vault, Slack and the database nothing much."""
        cached = self._ready_cache
        if cached and time.monotonic() - cached[0] < READY_CACHE_SECONDS:
            return cached[1]
        status: dict = {"ok": True}

        def part(name: str, check: Callable[[], object]) -> None:
            try:
                check()
                status[name] = "ok"
            except Exception as exc:
                status["ok"] = False
                status[name] = _reason(exc)

        def database() -> None:
            with self.store.engine.connect() as c:
                c.execute(sa.text("SELECT 1"))

        part("database", database)

        def vault() -> None:
            auth = self.backend.auth
            ok, reason = auth.readiness() if auth is not None else (True, "")
            if not ok:
                raise ProviderError(reason)
            if auth is None:
                self.backend.check()

        part("vault", vault)
        if self.client is not None:
            part("slack", self.client.auth_test)
        if self.forwarders is not None and self.forwarders.workers:
            # Reported, never failing readiness: a SIEM being down must not take the bot
            # out of service (the events wait in the database).
            try:
                status["forwarding"] = self.forwarders.status()
            except Exception as exc:
                status["forwarding"] = _reason(exc)
        self._ready_cache = (time.monotonic(), status)
        return status

    def start(self) -> None:
        self._started = True
        self.scheduler.start()
        if self.service.outbox is not None:
            self.service.outbox.start()
        if self.forwarders is not None:
            self.forwarders.start()

    def stop(self) -> None:
        self.scheduler.shutdown()
        if self.service.outbox is not None:
            self.service.outbox.stop()
        if self.forwarders is not None:
            self.forwarders.stop()
        self.store.engine.dispose()


READY_CACHE_SECONDS = 2.0
AUTH_INTERVAL = 30.0  # seconds between looks at the bot's own Vault token


def _reason(exc: Exception) -> str:
    """A failure as one safe line: our errors carry safe messages; others give their kind."""
    from slack_sdk.errors import SlackApiError

    if isinstance(exc, ProviderError):
        return str(exc)
    if isinstance(exc, SlackApiError):
        return f"Slack refused the bot token ({exc.response.get('error')})"
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return f"unreachable ({type(getattr(exc, 'orig', None) or exc).__name__})"
    return f"unreachable ({type(exc).__name__})"


def policy_changes(old: Policy, new: Policy) -> str:
    """What a reload changed, in one line: resources added, removed, changed; other settings."""
    added = sorted(set(new.resources) - set(old.resources))
    removed = sorted(set(old.resources) - set(new.resources))
    changed = sorted(
        n for n in set(new.resources) & set(old.resources) if new.resources[n] != old.resources[n]
    )
    parts = [f"{len(new.resources)} resource(s)"]
    parts += [
        f"{what} {', '.join(names)}"
        for what, names in (("added", added), ("removed", removed), ("changed", changed))
        if names
    ]
    others = [
        name
        for name in type(new).model_fields
        if name != "resources" and getattr(new, name) != getattr(old, name)
    ]
    if others:
        parts.append(f"other settings changed: {', '.join(others)}")
    elif not (added or removed or changed):
        parts.append("nothing changed")
    return "; ".join(parts)


def forwarders_for(store: Store, policy: Policy) -> Forwarders:
    """A worker per sink in `audit.forward` (not started)."""
    from bot.forward import sink_for

    return Forwarders(
        [
            Forwarder(store, sink.name, sink_for(sink), start=sink.start)
            for sink in policy.audit.forward
        ]
    )


def build(
    settings: Settings,
    *,
    policy: Policy | None = None,
    migrate_db: bool = True,
    clock: Callable[[], datetime] = utcnow,
    process_before_response: bool = False,
    inline_outbox: bool | None = None,
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
    auth = vault_auth_from_env(settings.vault_addr, token, interval=AUTH_INTERVAL)
    backend = VaultBackend.from_auth(auth, token_role=settings.vault_token_role or None)
    bot_token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    client = make_client(bot_token, settings.slack_base_url())
    scheduler = Scheduler(sweep_interval)
    service = Breakglass(
        store, policy, backend, timers=scheduler, clock=clock, signer=settings.audit_signer()
    )
    notifier = SlackNotifier(client, service.core, settings.vault_addr, service.digests)
    service.grants.courier = notifier
    # Tests drive the bot request by request and read Slack right after: the outbox is then
    # drained in the committing thread as well. In production a worker thread does it.
    inline = process_before_response if inline_outbox is None else inline_outbox
    worker = OutboxWorker(store, utcnow, notifier.handlers(), inline=inline)
    service.attach_outbox(worker)
    scheduler.bind(service, auth)
    secret = settings.slack_signing_secret
    app = create_app(
        service,
        client,
        signing_secret=secret.get_secret_value() if secret else None,
        process_before_response=process_before_response,
    )
    runtime = Runtime(settings, store, backend, service, scheduler, app, None, client)  # type: ignore[arg-type]
    runtime.forwarders = forwarders_for(store, policy)
    service.core.on_audit = runtime.forwarders.wake
    runtime.web = create_web_app(
        app,
        signing_secret=secret.get_secret_value() if secret else None,
        live=runtime.live,
        ready=runtime.ready,
        metrics=functools.partial(metrics.exposition, metrics.registry_for(service.stats)),
    )
    return runtime
