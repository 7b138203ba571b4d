"""Effects the use cases owe, recorded in their own transaction (the outbox), and the worker
that carries them out: in order per request and lane, retried with backoff until done."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session

from bot import logs
from bot.domain.notices import Notice
from bot.domain.workflow import Event
from bot.store import OutboxEntry, Store, outbox
from bot.usecases.ports import Clock, utcnow
from bot.usecases.stats import SLACK_ERRORS

log = logging.getLogger(__name__)

# Lanes: the security channel's card and thread in one order; the requester's DMs in another,
# so a card that cannot be posted does not hold back what the requester is told.
# The delivery lane holds the check that a credential reached its requester, due later.
THREAD, DM, ALERT, DELIVERY = "thread", "dm", "alert", "delivery"


class Impossible(Exception):
    """The effect can never be carried out (the message is why); it is given up, loudly."""


class Later(Exception):
    """Not now (the message is why); try again with backoff, or after `after` seconds when
    the other side said when (Slack's Retry-After)."""

    def __init__(self, message: str, *, after: float | None = None):
        super().__init__(message)
        self.after = after


class Effects:
    """What the use cases owe, as outbox rows in the caller's transaction. Outbox times are
    wall-clock times: when to try Slack again is not the domain's clock."""

    def __init__(self, clock: Clock = utcnow):
        self.clock = clock
        self.wake: Callable[[], None] | None = None

    def _add(
        self,
        s: Session,
        kind: str,
        lane: str,
        request_id: int | None,
        *,
        after: timedelta | None = None,
        **payload: Any,
    ) -> None:
        at = self.clock()
        outbox.add(
            s,
            at=at,
            kind=kind,
            lane=lane,
            request_id=request_id,
            payload=payload,
            wake=self.wake,
            not_before=at + after if after else None,
        )

    def card(self, s: Session, request_id: int) -> None:
        """Post the request's status card, or bring it up to date."""
        self._add(s, "card", THREAD, request_id)

    def thread(self, s: Session, request_id: int, seq: int, actor: str, note: str = "") -> None:
        """A reply in the request's thread for audit event `seq`."""
        self._add(s, "thread", THREAD, request_id, seq=seq, actor=actor, note=note)

    def dm(self, s: Session, request_id: int | None, user: str, notice: Notice) -> None:
        self._add(s, "dm", DM, request_id, user=user, notice=notice.to_json())

    def alert(self, s: Session, request_id: int | None, notice: Notice) -> None:
        self._add(s, "alert", THREAD if request_id else ALERT, request_id, notice=notice.to_json())

    def digest(self, s: Session, end: str) -> None:
        """The weekly digest of the period up to `end`, to the security channel."""
        self._add(s, "digest", ALERT, None, end=end)

    def anchor(self, s: Session, line: str, public_key: str | None) -> None:
        """The audit chain's head, posted to the security channel: an anchor kept outside
        the database."""
        self._add(s, "anchor", ALERT, None, line=line, public_key=public_key)

    def credential_changed(self, s: Session, request_id: int) -> None:
        """The requester's credential message no longer shows what is true: edit it."""
        self._add(s, "credential", DM, request_id)

    def redeliver(self, s: Session, request_id: int, *, after: timedelta | None = None) -> None:
        """The credential never reached its requester: revoke it, issue and deliver anew.
        With `after`: the safety net owed at issue, a no-op once the credential arrived (it
        covers a crash between issuing and delivering)."""
        if after is None:  # now: bring the safety net forward rather than queue behind it
            hurried = s.execute(
                update(OutboxEntry)
                .where(
                    OutboxEntry.request_id == request_id,
                    OutboxEntry.kind == "redeliver",
                    OutboxEntry.done_at.is_(None),  # type: ignore[union-attr]
                )
                .values(next_attempt_at=self.clock())
            ).rowcount
            if hurried:
                if self.wake is not None:
                    outbox.wake_after_commit(s, self.wake)
                return
        self._add(s, "redeliver", DELIVERY, request_id, after=after)


Handler = Callable[[OutboxEntry, dict[str, Any]], None]
YIELD_AT_MOST = 5.0  # seconds the worker waits for urgent work before it posts anyway


class OutboxWorker:
    """Carries out owed effects. Woken on every commit that owes one; polls for retries."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        handlers: dict[str, Handler],
        *,
        poll: float = 0.5,
        threads: int = 4,
        inline: bool = False,
    ):
        self.store = store
        self.clock = clock
        self.handlers = handlers
        self.poll = poll
        self.inline = inline  # drain in the committing thread too (tests: no waiting)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="outbox")
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # While this says urgent work is under way (revocations), the worker thread waits:
        # on two cores, Slack's messages must not take the CPU from ending access on time.
        self.yield_to: Callable[[], bool] = lambda: False

    def wake(self) -> None:
        if self.inline:
            self.drain()
        self._wakeup.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="outbox", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            waited = 0.0
            while self.yield_to() and waited < YIELD_AT_MOST and not self._stop.is_set():
                self._stop.wait(0.05)
                waited += 0.05
            try:
                self.drain()
            except Exception:
                log.exception("the outbox worker failed a round; trying again")
            self._wakeup.wait(self.poll)
            self._wakeup.clear()

    def drain(self) -> int:
        """Carry out what is due until nothing is; returns how many were done."""
        total = 0
        while not self._stop.is_set():
            entries = outbox.claim(self.store, self.clock())
            if not entries:
                return total
            if len(entries) == 1:
                total += self._run(entries[0])
            else:
                total += sum(self._pool.map(self._run, entries))
        return total

    def _run(self, entry: OutboxEntry) -> int:
        with logs.acting_for(entry.request_id):
            return self._run_one(entry)

    def _run_one(self, entry: OutboxEntry) -> int:
        handler = self.handlers.get(entry.kind)
        try:
            if handler is None:
                raise Impossible(f"no handler for {entry.kind!r}")
            handler(entry, outbox.payload(entry))
        except Impossible as exc:
            SLACK_ERRORS.labels(entry.kind).inc()
            log.error(
                "gave up %s for request %s after %s attempt(s): %s",
                entry.kind,
                entry.request_id,
                entry.attempts + 1,
                exc,
            )
            outbox.give_up(self.store, entry, self.clock(), str(exc))
            return 0
        except Exception as exc:
            SLACK_ERRORS.labels(entry.kind).inc()
            reason = str(exc) if isinstance(exc, Later) else _reason(exc)
            after = exc.after if isinstance(exc, Later) else None
            when = outbox.retry(self.store, entry, self.clock(), reason, after=after)
            level = logging.WARNING if entry.attempts < 3 else logging.ERROR
            log.log(
                level,
                "%s for request %s failed (attempt %s: %s); retrying at %s",
                entry.kind,
                entry.request_id,
                entry.attempts + 1,
                reason,
                when.isoformat(timespec="seconds"),
            )
            return 0
        outbox.done(self.store, entry, self.clock())
        return 1


def _reason(exc: Exception) -> str:
    """A failure as one safe line (Slack's error code, or the kind of exception)."""
    response = getattr(exc, "response", None)
    code = response.get("error") if hasattr(response, "get") else None
    return f"{type(exc).__name__}: {code}" if code else type(exc).__name__


__all__ = ["ALERT", "DM", "THREAD", "Effects", "Event", "Impossible", "Later", "OutboxWorker"]
