"""Time-driven work: one registry of deadline kinds (kind -> query, handler), the sweep."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, select

from bot import logs
from bot.domain.workflow import Refused
from bot.store import AccessRequest, Grant
from bot.usecases.core import Core
from bot.usecases.grants import Grants
from bot.usecases.ports import utcnow
from bot.usecases.requests import Requests
from bot.usecases.reviews import DEADLINE as REVIEW_DUE
from bot.usecases.reviews import Reviews

log = logging.getLogger(__name__)

# Issuing takes well under a second (Vault's timeouts included, well under a minute); this
# long in "approved" means the process died mid-way. After a restart the request is failed,
# and anything Vault had made revoked, within two minutes.
ISSUE_INTERRUPTED_AFTER = timedelta(seconds=90)
# Due deadlines are handled this many at a time: a restart with 1,000 overdue grants
# revokes them in parallel, as Vault allows, not one after another.
SWEEP_THREADS = 16
SWEEP_BATCH = 100  # due deadlines of a kind that batches, handled together


@dataclass(frozen=True)
class DeadlineKind:
    """One kind of deadline: where its due rows come from and what to do when one is due."""

    name: str
    done_key: str  # the sweep's counter
    due: Callable[[Session], Iterator[tuple[int, datetime]]]  # (key, when)
    run: Callable[[int], bool]  # True when it acted
    # Retries are timed by the wall clock (when to try Vault again), not by the domain's.
    wall_clock: bool = False
    # Many due at once, handled as batches: the keys it acted on.
    run_many: Callable[[list[int]], Collection[int]] | None = None


class Deadlines:
    def __init__(self, core: Core, requests: Requests, grants: Grants, reviews: Reviews):
        self.core = core
        self.kinds: dict[str, DeadlineKind] = {
            k.name: k
            for k in (
                DeadlineKind("timeout", "timed_out", self._pending, requests.time_out),
                DeadlineKind(
                    "expire", "expired", self._active, grants.expire, run_many=grants.expire_many
                ),
                DeadlineKind("interrupted", "interrupted", self._issuing, self._interrupted),
                DeadlineKind(
                    "revocation", "revoked", self._revocations, grants.try_revoke, wall_clock=True
                ),
                # Open reviews not yet reminded: reminded once at their due time.
                DeadlineKind(REVIEW_DUE, "reminded", self._reviews, reviews.remind),
            )
        }
        self.grants = grants
        self._running = 0  # deadline actions under way in this process
        self._running_lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """True while deadline actions (revocations above all) run in this process."""
        return self._running > 0

    # ---- where deadlines come from --------------------------------------------------------

    @staticmethod
    def _pending(s: Session) -> Iterator[tuple[int, datetime]]:
        for req in s.exec(select(AccessRequest).where(AccessRequest.state == "pending")):
            if req.timeout_at:
                yield req.id, req.timeout_at

    @staticmethod
    def _active(s: Session) -> Iterator[tuple[int, datetime]]:
        rows = s.exec(
            select(Grant.request_id, Grant.expires_at)
            .join(AccessRequest, AccessRequest.id == Grant.request_id)
            .where(AccessRequest.state == "active")
        )
        yield from rows

    @staticmethod
    def _issuing(s: Session) -> Iterator[tuple[int, datetime]]:
        for req in s.exec(select(AccessRequest).where(AccessRequest.state == "approved")):
            yield req.id, req.updated_at + ISSUE_INTERRUPTED_AFTER

    @staticmethod
    def _revocations(s: Session) -> Iterator[tuple[int, datetime]]:
        rows = s.exec(
            select(Grant.request_id, Grant.revoke_next_at).where(
                Grant.ended_at.is_(None),  # type: ignore[union-attr]
                Grant.revoke_next_at.is_not(None),  # type: ignore[union-attr]
            )
        )
        yield from rows

    @staticmethod
    def _reviews(s: Session) -> Iterator[tuple[int, datetime]]:
        yield from Reviews.due(s)

    def _interrupted(self, request_id: int) -> bool:
        return self.grants.fail_issue(
            request_id,
            "interrupted: the bot stopped while issuing; anything Vault had made for it is revoked",
        )

    # ---- acting -------------------------------------------------------------------------

    def pending(self) -> list[tuple[str, int, datetime]]:
        """Every deadline still to come or overdue, from the database: (kind, key, when)."""
        with self.core.store.read() as s:
            return [(k.name, key, when) for k in self.kinds.values() for key, when in k.due(s)]

    def sweep(self) -> dict[str, int]:
        """Act on every overdue deadline no timer handled (after a restart, say), several at
        a time; each action is a conditional state change, so racing a timer is safe."""
        now, wall = self.core.clock(), utcnow()
        done = {k.done_key: 0 for k in self.kinds.values()} | {"failed": 0}
        due = [
            (kind, key)
            for kind, key, when in self.pending()
            if when <= (wall if self.kinds[kind].wall_clock else now)
        ]
        if not due:
            return done

        work: list[tuple[str, list[int]]] = []
        for name, kind in self.kinds.items():
            keys = [key for k, key in due if k == name]
            size = SWEEP_BATCH if kind.run_many else 1
            work += [(name, keys[i : i + size]) for i in range(0, len(keys), size)]

        def one(item: tuple[str, list[int]]) -> tuple[str, int]:
            name, keys = item
            try:
                return self.kinds[name].done_key, self.run_many(name, keys)
            except Exception:
                log.exception("sweep could not handle %s of %s", name, keys)
                return "failed", len(keys)

        with ThreadPoolExecutor(min(SWEEP_THREADS, len(work)), "sweep") as pool:
            for key, count in pool.map(one, work):
                done[key] += count
        if any(done.values()):
            log.info("sweep: %s", {k: v for k, v in done.items() if v})
        return done

    def run_many(self, kind: str, keys: list[int]) -> int:
        """Act on due deadlines of one kind, as one batch where the kind allows; how many it
        acted on."""
        handler = self.kinds[kind].run_many
        if handler is None or len(keys) == 1:
            return sum(self.run(kind, key) for key in keys)
        with self._acting():
            return len(handler(keys))

    def run(self, kind: str, key: int) -> bool:
        """Act on one deadline (entry point for timers and the sweep); True if it acted.
        Every deadline's key is its request's id: the lines logged meanwhile carry it."""
        with self._acting(), logs.acting_for(key, deadline=kind):
            try:
                return self.kinds[kind].run(key)
            except Refused as exc:
                log.info("%s of %s: %s", kind, key, exc)
        return False

    @contextlib.contextmanager
    def _acting(self) -> Iterator[None]:
        """Counts the deadline actions under way (`busy`)."""
        with self._running_lock:
            self._running += 1
        try:
            yield
        finally:
            with self._running_lock:
                self._running -= 1
