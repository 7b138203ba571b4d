"""Forwarding the audit trail: one worker thread per sink sends the events after the sink's
durable cursor, in order, and advances the cursor only once the receiver has them.

On PostgreSQL the cursor row is locked (`FOR UPDATE SKIP LOCKED`) for the whole send and
advanced in that same transaction: a second replica skips the sink while one sends, and a
crash before the commit leaves the cursor where it was. SQLite has one bot process: the send
happens outside any transaction (SQLite's single writer would otherwise wait on the SIEM)
and the cursor moves with a conditional UPDATE. Either way, the only event that can reach a
receiver twice is one whose batch it took (2xx, or the syslog stream closed) just before the
bot died, before the commit: the event's `seq` is there for receivers to drop it.

The workers own their transactions and threads: the request path only wakes them after its
commit, and Slack being down does not concern them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.store import AuditCursor, Store, audit_stream, cursors
from bot.usecases.ports import Clock, EventSink, utcnow

log = logging.getLogger(__name__)

BATCH = 100  # events per webhook POST / per syslog connection
HELD_RECHECK = timedelta(seconds=0.25)


class SinkDown(Exception):
    """The receiver did not take the events (unreachable, timed out, 5xx, 429, 408): try
    again with backoff, or after `after` seconds when it said when (Retry-After). The message
    is one safe line (no URL, no body)."""

    def __init__(self, message: str, *, after: float | None = None):
        super().__init__(message)
        self.after = after


class SinkRefused(Exception):
    """The receiver refused the events for a reason a retry alone will not fix (401, 403,
    404, 400…): our configuration or theirs is wrong. Logged loudly and retried slowly: an
    event is never skipped."""


@dataclass(frozen=True)
class Backoff:
    """Seconds between attempts: `first`, doubling up to `cap` while the receiver is down;
    `refused` while it refuses (someone has to fix a configuration)."""

    first: float = 1.0
    cap: float = 60.0
    refused: float = 300.0
    retry_after_cap: float = 3600.0  # the most a receiver's Retry-After holds us back

    def delay(self, attempts: int, exc: Exception) -> float:
        if isinstance(exc, SinkRefused):
            return self.refused
        delay = min(self.cap, self.first * 2 ** min(attempts, 20))
        after = exc.after if isinstance(exc, SinkDown) else None
        if after is not None:
            delay = max(delay, min(after, self.retry_after_cap))
        return delay


class Forwarder:
    """One sink's worker: woken after every commit that wrote audit events, and every `poll`
    seconds (events written by another replica, retries)."""

    def __init__(
        self,
        store: Store,
        name: str,
        sink: EventSink,
        *,
        start: str = "beginning",
        clock: Clock = utcnow,
        poll: float = 5.0,
        batch: int = BATCH,
        backoff: Backoff | None = None,
    ):
        self.store = store
        self.name = name
        self.sink = sink
        self.start_at = start
        self.clock = clock
        self.poll = poll
        self.batch = batch
        self.backoff = backoff or Backoff()
        self.locking = store.engine.dialect.name == "postgresql"
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at: datetime | None = None  # when this process tries again

    # ---- the thread ---------------------------------------------------------------------

    def wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        cursors.ensure(self.store, self.name, self.start_at, self.clock())
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name=f"forward-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop after the batch in flight (its cursor is then committed or left as it was)."""
        self._stop.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.sink.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wakeup.clear()  # before draining: a commit from now on wakes the next wait
            try:
                self.drain()
            except Exception:
                log.exception("forwarding to %s failed a round; trying again", self.name)
            self._wakeup.wait(self._wait())

    def _wait(self) -> float:
        if self._retry_at is None:
            return self.poll
        left = (self._retry_at - self.clock()).total_seconds()
        return max(0.05, min(self.poll, left))

    # ---- the work -----------------------------------------------------------------------

    def drain(self) -> int:
        """Send what the sink lacks, batch after batch, until it has everything, it fails,
        or another replica holds it; returns how many events were delivered."""
        total = 0
        while not self._stop.is_set():
            sent = self.send_once()
            if sent <= 0:
                return total
            total += sent
        return total

    def send_once(self) -> int:
        """One batch: how many events the sink took (0: nothing to send, backing off, failed,
        or held by another replica)."""
        now = self.clock()
        self._retry_at = None
        if self.locking:
            with self.store.transaction() as s:
                cursor = cursors.lock(s, self.name)
                if cursor is None:
                    # Another replica is sending; what woke us may have committed after its
                    # last read, so look again shortly rather than at the next poll.
                    self._retry_at = now + HELD_RECHECK
                    return 0
                if not self._due(cursor, now):
                    return 0
                events = audit_stream.page(s, cursor.seq, self.batch)
                if not events:
                    return 0
                error = self._deliver(events)
                if error is not None:
                    self._failed(s, cursor, events, error)
                    return 0
                cursors.advance(s, self.name, cursor.seq, events[-1]["seq"], self.clock())
            return len(events)
        with self.store.read() as s:
            cursor = cursors.get(s, self.name)
            if cursor is None or not self._due(cursor, now):
                return 0
            events = audit_stream.page(s, cursor.seq, self.batch)
        if not events:
            return 0
        error = self._deliver(events)
        with self.store.transaction() as s:
            if error is not None:
                self._failed(s, cursor, events, error)
                return 0
            if not cursors.advance(s, self.name, cursor.seq, events[-1]["seq"], self.clock()):
                log.error(
                    "the cursor of audit sink %s moved while this process sent events %s to "
                    "%s: another process forwards from this SQLite database (run one, or use "
                    "PostgreSQL for replicas); the receiver may see these events twice",
                    self.name,
                    events[0]["seq"],
                    events[-1]["seq"],
                )
                return 0
        return len(events)

    def _due(self, cursor: AuditCursor, now: datetime) -> bool:
        if cursor.next_attempt_at is not None and cursor.next_attempt_at > now:
            self._retry_at = cursor.next_attempt_at
            return False
        return True

    def _deliver(self, events: list[dict]) -> Exception | None:
        try:
            self.sink.send(events)
        except (SinkDown, SinkRefused) as exc:
            return exc
        except Exception as exc:  # a bug in a sink must not stop forwarding: retried
            log.exception("audit sink %s raised unexpectedly", self.name)
            return SinkDown(f"unexpected {type(exc).__name__}")
        return None

    def _failed(self, s: object, cursor: AuditCursor, events: list[dict], exc: Exception) -> None:
        now = self.clock()
        delay = self.backoff.delay(cursor.attempts, exc)
        retry_at = now + timedelta(seconds=delay)
        cursors.failed(s, cursor, now, str(exc), retry_at)  # type: ignore[arg-type]
        self._retry_at = retry_at
        refused = isinstance(exc, SinkRefused)
        level = logging.ERROR if refused or cursor.attempts >= 3 else logging.WARNING
        log.log(
            level,
            "audit sink %s %s events %s-%s (attempt %s: %s)%s; trying again at %s",
            self.name,
            "refused" if refused else "did not take",
            events[0]["seq"],
            events[-1]["seq"],
            cursor.attempts + 1,
            exc,
            ": check its configuration, nothing is skipped" if refused else "",
            retry_at.isoformat(timespec="seconds"),
        )


class Forwarders:
    """Every configured sink's worker."""

    def __init__(self, workers: list[Forwarder]):
        self.workers = workers

    def wake(self) -> None:
        for w in self.workers:
            w.wake()

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def stop(self) -> None:
        for w in self.workers:
            w.stop()

    def status(self) -> dict[str, str]:
        """Each sink: "ok, N behind", or since when and why it fails (for /readyz)."""
        names = [w.name for w in self.workers]
        if not names:
            return {}
        store = self.workers[0].store
        with store.engine.connect() as c:
            found = cursors.status(c, names)
        out = {}
        for st in found:
            if st.failing_since is not None:
                since = st.failing_since.isoformat(timespec="seconds")
                out[st.sink] = f"failing since {since} ({st.last_error}); {st.lag} behind"
            else:
                out[st.sink] = f"ok, {st.lag} behind"
        return out
