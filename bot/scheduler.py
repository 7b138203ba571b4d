"""Timers derived from the database (APScheduler), plus a periodic sweep for anything missed."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from bot.usecases import Breakglass
from providers import ProviderError

log = logging.getLogger(__name__)


def job_id(kind: str, request_id: int) -> str:
    return f"{kind}:{request_id}"


class Scheduler:
    """One in-memory job per deadline; the database stays the source of truth.

    Each replica keeps its own scheduler (APScheduler 3 cannot share a job store between
    processes); the conditional state changes in the service make racing replicas safe.
    """

    def __init__(self, sweep_interval: timedelta = timedelta(seconds=60)):
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone="UTC",
        )
        self.sweep_interval = sweep_interval
        self.service: Breakglass | None = None

    def bind(self, service: Breakglass) -> None:
        self.service = service

    def at(self, kind: str, request_id: int, when: datetime) -> None:
        assert self.service is not None, "bind() the service first"
        self.scheduler.add_job(
            self.service.deadlines.run,
            "date",
            run_date=when,
            args=[kind, request_id],
            id=job_id(kind, request_id),
            replace_existing=True,
            # The default grace of 1 s silently drops a job that came due while we were down.
            misfire_grace_time=None,
        )

    def cancel(self, kind: str, request_id: int) -> None:
        job = self.scheduler.get_job(job_id(kind, request_id))
        if job is not None:
            job.remove()

    def start(self) -> None:
        """Act on what is overdue, then schedule every future deadline and the sweep."""
        assert self.service is not None, "bind() the service first"
        self.scheduler.start()
        done = self.service.deadlines.sweep()
        if any(done.values()):
            log.info("startup sweep: %s", done)
        for kind, request_id, when in self.service.deadlines.pending():
            self.at(kind, request_id, when)
        self.scheduler.add_job(
            self.service.deadlines.sweep,
            "interval",
            seconds=self.sweep_interval.total_seconds(),
            id="sweep",
            replace_existing=True,
            misfire_grace_time=None,
        )
        self._schedule_token_renewal()

    def _schedule_token_renewal(self) -> None:
        backend = self.service.backend
        try:
            every = backend.renewal_interval()
        except ProviderError as exc:
            log.warning("cannot look up the bot's Vault token (%s); not renewing it", exc)
            return
        if every is None:
            return
        self.scheduler.add_job(
            self._renew_token,
            "interval",
            seconds=every,
            id="vault-token-renewal",
            replace_existing=True,
            misfire_grace_time=None,
        )

    def _renew_token(self) -> None:
        try:
            ttl = self.service.backend.renew_self()
            log.info("renewed the bot's Vault token; TTL now %s s", ttl)
        except ProviderError as exc:
            log.error("could not renew the bot's Vault token: %s", exc)

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
