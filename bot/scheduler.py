"""Timers derived from the database (APScheduler), a periodic sweep for anything missed, and
the upkeep of the bot's own Vault token."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from bot.domain.notices import Notice, NoticeKind
from bot.domain.windows import cron_trigger
from bot.usecases import Breakglass
from providers.auth import VaultAuth

log = logging.getLogger(__name__)

AUTH_EVERY = timedelta(seconds=30)


def job_id(kind: str, key: int) -> str:
    return f"{kind}:{key}"


class Scheduler:
    """One in-memory job per deadline; the database stays the source of truth.

    Each replica keeps its own scheduler (APScheduler 3 cannot share a job store between
    processes); the conditional state changes in the use cases make racing replicas safe.
    """

    def __init__(self, sweep_interval: timedelta = timedelta(seconds=60)):
        self.scheduler = BackgroundScheduler(
            # Enough threads that 200 grants expiring together are revoked together.
            executors={"default": ThreadPoolExecutor(16)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone="UTC",
        )
        self.sweep_interval = sweep_interval
        self.service: Breakglass | None = None
        self.auth: VaultAuth | None = None
        self._auth_failing = False
        self._cron_schedules: dict[str, tuple[str, str]] = {}  # job id -> (cron, time zone)
        self._cron_schedules_set = False

    def bind(self, service: Breakglass, auth: VaultAuth | None = None) -> None:
        self.service = service
        self.auth = auth

    def at(self, kind: str, key: int, when: datetime) -> None:
        assert self.service is not None, "bind() the service first"
        self.scheduler.add_job(
            self.service.deadlines.run,
            "date",
            run_date=when,
            args=[kind, key],
            id=job_id(kind, key),
            replace_existing=True,
            # The default grace of 1 s silently drops a job that came due while we were down.
            misfire_grace_time=None,
        )

    def cancel(self, kind: str, key: int) -> None:
        job = self.scheduler.get_job(job_id(kind, key))
        if job is not None:
            job.remove()

    def start(self) -> None:
        """Start at once; the start-up sweep and the timers follow as a job, so the server
        answers while a thousand overdue grants are being revoked."""
        assert self.service is not None, "bind() the service first"
        self.scheduler.start()
        self.scheduler.add_job(
            self._catch_up,
            "date",
            run_date=datetime.now(UTC),
            id="startup",
            replace_existing=True,
            misfire_grace_time=None,
        )
        self.scheduler.add_job(
            self.service.deadlines.sweep,
            "interval",
            seconds=self.sweep_interval.total_seconds(),
            id="sweep",
            replace_existing=True,
            misfire_grace_time=None,
        )
        if self.auth is not None:
            self.scheduler.add_job(
                self.maintain_auth,
                "interval",
                seconds=AUTH_EVERY.total_seconds(),
                id="vault-auth",
                replace_existing=True,
                misfire_grace_time=None,
            )
        self.schedule_policy_jobs()

    def schedule_policy_jobs(self) -> None:
        """The jobs whose schedule the policy sets (the audit round, the digest), as the
        policy in force says; run again after a reload (a job whose schedule did not change
        keeps its next run)."""
        assert self.service is not None, "bind() the service first"
        policy = self.service.policy
        anchor = policy.audit.anchor
        self._cron_job("audit", self.audit_round, (anchor.cron, anchor.timezone))
        schedule = policy.digest
        if schedule is None:
            if self.scheduler.get_job("digest") is not None:
                self.scheduler.remove_job("digest")
                log.info("the weekly digest is no longer scheduled")
            self._cron_schedules.pop("digest", None)
        else:
            self._cron_job("digest", self.owe_digest, (schedule.cron, schedule.timezone))
        self._cron_schedules_set = True

    def _cron_job(self, job_id: str, func: Callable[[], None], cron: tuple[str, str]) -> None:
        if self._cron_schedules.get(job_id) == cron and self.scheduler.get_job(job_id):
            return
        self.scheduler.add_job(
            func,
            cron_trigger(cron[0], ZoneInfo(cron[1])),
            id=job_id,
            replace_existing=True,
            # A round or a digest missed while the bot was down still runs (within an hour).
            misfire_grace_time=3600,
        )
        self._cron_schedules[job_id] = cron
        if self._cron_schedules_set:  # a reload changed it (the start says nothing)
            log.info("the %s job now runs at %r (%s)", job_id, cron[0], cron[1])

    def audit_round(self) -> None:
        """The daily round: verify the chain (alert if it broke), anchor its head, prune."""
        assert self.service is not None
        trail = self.service.trail
        trail.daily(trail.due(datetime.now(UTC)))

    def owe_digest(self) -> None:
        """The digest's schedule fired: owe the digest of the week up to that moment."""
        assert self.service is not None
        due = self.service.digests.due(datetime.now(UTC))
        if due is not None:
            self.service.digests.owe(due)

    def _catch_up(self) -> None:
        assert self.service is not None
        self.service.deadlines.sweep()
        for kind, key, when in self.service.deadlines.pending():
            self.at(kind, key, when)

    def maintain_auth(self) -> None:
        """Renew or replace the bot's Vault token; a token that can be neither is an alert in
        the security channel (once per episode), not only a log line."""
        assert self.service is not None and self.auth is not None
        status = self.auth.maintain()
        if status.renewed or status.relogged:
            log.info("the bot's Vault token: %s", status.reason)
        failing = status.state == "failed"
        if failing == self._auth_failing:
            if failing:
                log.error("the bot's Vault token: %s", status.reason)
            return
        self._auth_failing = failing
        kind = NoticeKind.VAULT_AUTH_FAILING if failing else NoticeKind.VAULT_AUTH_RESTORED
        log.log(
            logging.ERROR if failing else logging.INFO, "the bot's Vault token: %s", status.reason
        )
        core = self.service.core
        with core.store.transaction() as s:
            core.effects.alert(s, None, Notice(kind, None, {"reason": status.reason}))

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
