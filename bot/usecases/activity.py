"""What a grant was used for: when a grant of a resource with `activity:` ends, and before its
database user is dropped, read what that user ran (pg_stat_statements) and record it as an
audit event and a thread reply, in the transaction that records the end.

Never holds up a revocation for long, never fails one: the read is time-boxed, and whatever
goes wrong is recorded as "activity unavailable: <reason>".
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, select

from bot.domain.activity import Activity, StatementStat, summarize, unavailable
from bot.domain.workflow import Event
from bot.policy import ActivitySettings
from bot.store import AccessRequest, Grant
from bot.usecases.core import SYSTEM, Core
from providers.vault_database import (
    ActivityUnavailable,
    Monitor,
    Statements,
    read_statements,
    user_oids,
)

log = logging.getLogger(__name__)

STEP_TIMEOUT = 3.0  # seconds for each Vault call, the connection, and the query
DEADLINE = 5.0  # seconds a revocation waits for the reads at most
GONE = "the database user was already dropped (Vault's own expiry came first)"

# One read serves every grant of a batch that shares the monitoring role and the database.
Key = tuple[str, str, str | None]  # (mount, monitor_role, dsn)


class ActivityReader:
    def __init__(self, core: Core, threads: int = 4):
        self.core = core
        self._pool = ThreadPoolExecutor(threads, "activity")

    def _configured(self, resource: str) -> tuple[Key, ActivitySettings] | None:
        res = self.core.policy.resources.get(resource)
        if res is None or res.activity is None or res.provider != "vault-database":
            return None
        mount = str(res.options.get("mount", "database")).strip("/")
        return (mount, res.activity.monitor_role, res.activity.dsn), res.activity

    def read(self, grants: list[Grant]) -> dict[int, Activity]:
        """The activity of each grant whose resource records it (by request id). Returns
        within DEADLINE seconds whatever happens; never raises."""
        if not any(r.activity for r in self.core.policy.resources.values()):
            return {}
        try:
            return self._read(grants)
        except Exception:  # a revocation must never fail because of this
            log.exception("reading the activity of %s grant(s) failed", len(grants))
            return {}

    def _read(self, grants: list[Grant]) -> dict[int, Activity]:
        named = [g for g in grants if g.identity and g.provider == "vault-database"]
        if not named:
            return {}
        with self.core.store.read() as s:
            resources = dict(
                s.exec(
                    select(AccessRequest.id, AccessRequest.resource).where(
                        AccessRequest.id.in_([g.request_id for g in named])  # type: ignore[union-attr]
                    )
                ).all()
            )
        groups: dict[Key, list[Grant]] = {}
        for grant in named:
            found = self._configured(resources.get(grant.request_id, ""))
            if found is not None:
                groups.setdefault(found[0], []).append(grant)
        futures = {
            self._pool.submit(
                self._read_group, key, {g.identity: g.db_user_oid for g in group}
            ): group
            for key, group in groups.items()
        }
        done, _ = wait(futures, timeout=DEADLINE)
        out: dict[int, Activity] = {}
        for future, group in futures.items():
            if future in done:
                by_identity = future.result()
                for grant in group:
                    out[grant.request_id] = by_identity[grant.identity]
            else:  # it carries on in its thread, and revokes its monitoring lease when done
                for grant in group:
                    out[grant.request_id] = unavailable(f"no answer within {DEADLINE:g} s")
        return out

    def _monitor(self, key: Key) -> Monitor:
        mount, role, dsn = key
        return Monitor(self.core.backend, mount, role, dsn, timeout=STEP_TIMEOUT)

    def remember(self, request_id: int) -> None:
        """Record the oid of a just-issued grant's database user, if its resource records
        activity: its statements stay in pg_stat_statements under that oid after Vault drops
        the user, which Vault's own expiry may do a moment before the bot's. Best effort
        (without it, the user is found by its name while it exists)."""
        try:
            with self.core.store.read() as s:
                req = self.core.get(s, request_id)
                grant = s.exec(select(Grant).where(Grant.request_id == request_id)).first()
            found = self._configured(req.resource)
            if found is None or grant is None or not grant.identity:
                return
            oids = user_oids(self._monitor(found[0]), [grant.identity])
        except ActivityUnavailable as exc:
            log.warning("request %s: its database user's oid is unknown: %s", request_id, exc)
            return
        except Exception:
            log.exception("request %s: looking up its database user's oid failed", request_id)
            return
        if grant.identity in oids:
            with self.core.store.transaction() as s:
                s.execute(
                    update(Grant)
                    .where(Grant.id == grant.id, Grant.identity == grant.identity)
                    .values(db_user_oid=oids[grant.identity])
                )

    def _read_group(self, key: Key, users: dict[str, int | None]) -> dict[str, Activity]:
        usernames = list(users)
        try:
            found: Statements = read_statements(self._monitor(key), users)
        except ActivityUnavailable as exc:
            log.warning("activity of %s user(s) unavailable: %s", len(usernames), exc)
            return {u: unavailable(str(exc)) for u in usernames}
        except Exception as exc:
            log.exception("reading the activity of %s user(s) failed", len(usernames))
            return {u: unavailable(f"internal error ({type(exc).__name__})") for u in usernames}
        out: dict[str, Activity] = {}
        for user in usernames:
            if user in found.gone:
                out[user] = unavailable(GONE)
                continue
            rows = found.by_user.get(user, [])
            activity = summarize(
                [StatementStat(r.query, r.calls, r.rows, r.database) for r in rows]
            )
            activity.details["monitor"] = found.monitor
            out[user] = activity
        return out

    def record(
        self, s: Session, ended: list[tuple[AccessRequest, Grant]], readings: dict[int, Activity]
    ) -> None:
        """Record, in the caller's transaction (the one that records the end), the activity
        read for each of these grants: an audit event and its thread reply."""
        entries: list[tuple[int | None, Event, str, dict[str, Any], str]] = []
        for req, grant in ended:
            activity = readings.get(req.id)
            if activity is None:
                continue
            details = {"identity": grant.identity, "summary": activity.summary}
            entries.append(
                (req.id, Event.ACTIVITY, SYSTEM, details | activity.details, activity.summary)
            )
        if entries:
            self.core.record_many(s, entries)
