"""The outbox: effects owed, recorded in the transaction that made them owed, claimed by one
worker at a time (a lease, so replicas and threads never send one twice at once), delivered
in order per request and lane, retried with backoff until done or definitively impossible."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import update
from sqlmodel import Session, select

from bot.store.tables import OutboxEntry, Store

# Longer than any one delivery, the retries inside it included (3 tries of 10 s, waits of
# at most 10 s between them), and short enough that what a crashed process had claimed goes
# out within a minute of its restart.
CLAIM_FOR = timedelta(seconds=55)
BACKOFF_CAP = timedelta(seconds=30)


def add(
    session: Session,
    *,
    at: datetime,
    kind: str,
    lane: str,
    request_id: int | None,
    payload: dict[str, Any] | None = None,
    wake: Callable[[], None] | None = None,
    not_before: datetime | None = None,
) -> None:
    """Owe an effect, inside the caller's transaction."""
    session.add(
        OutboxEntry(
            request_id=request_id,
            lane=lane,
            kind=kind,
            payload=encode(payload),
            created_at=at,
            next_attempt_at=not_before or at,
        )
    )
    if wake is not None:
        wake_after_commit(session, wake)


def encode(payload: dict[str, Any] | None) -> str:
    """An entry's payload as stored: one spelling per content, so rows can be looked up by it."""
    return json.dumps(payload or {}, sort_keys=True)


def wake_after_commit(session: Session, wake: Callable[[], None]) -> None:
    """Run `wake` once the caller's transaction committed (Store.transaction runs the hooks)."""
    hooks = session.info.setdefault("after_commit", [])
    if wake not in hooks:
        hooks.append(wake)


_HEADS = sa.text(
    """
    SELECT o.id FROM outbox o
    WHERE o.done_at IS NULL AND o.next_attempt_at <= :now
      AND (o.claimed_until IS NULL OR o.claimed_until < :now)
      AND NOT EXISTS (
        SELECT 1 FROM outbox p
        WHERE p.done_at IS NULL AND p.lane = o.lane AND p.request_id = o.request_id
          AND p.id < o.id)
    ORDER BY o.id
    LIMIT :limit
    """
)


def claim(store: Store, now: datetime, limit: int = 20) -> list[OutboxEntry]:
    """The first undone entry of each (request, lane) that is due, claimed for this worker in
    one conditional UPDATE: what another worker claimed meanwhile is not ours."""
    with store.transaction() as s:
        ids = [row[0] for row in s.execute(_HEADS, {"now": _db(store, now), "limit": limit})]
        if not ids:
            return []
        won = s.execute(
            update(OutboxEntry)
            .where(
                OutboxEntry.id.in_(ids),  # type: ignore[union-attr]
                OutboxEntry.done_at.is_(None),  # type: ignore[union-attr]
                sa.or_(
                    OutboxEntry.claimed_until.is_(None),  # type: ignore[union-attr]
                    OutboxEntry.claimed_until < now,  # type: ignore[operator]
                ),
            )
            .values(claimed_until=now + CLAIM_FOR)
            .returning(OutboxEntry.id)
        ).all()
        mine = sorted(row[0] for row in won)
        if not mine:
            return []
        entries = s.exec(select(OutboxEntry).where(OutboxEntry.id.in_(mine))).all()  # type: ignore[union-attr]
    return sorted(entries, key=lambda e: e.id or 0)


def _db(store: Store, when: datetime) -> Any:
    """A bind value for raw SQL, as the UTCDateTime column type stores it."""
    from bot.store.tables import UTCDateTime

    return UTCDateTime().process_bind_param(when, store.engine.dialect)


def done(store: Store, entry: OutboxEntry, now: datetime) -> None:
    with store.transaction() as s:
        s.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id == entry.id)
            .values(done_at=now, claimed_until=None, attempts=entry.attempts + 1)
        )


def retry(
    store: Store, entry: OutboxEntry, now: datetime, error: str, *, after: float | None = None
) -> datetime:
    """Try again later: 1 s, 2 s, 4 s … capped at 30 s; never sooner than `after` seconds
    (the other side's Retry-After)."""
    delay = min(BACKOFF_CAP, timedelta(seconds=2 ** min(entry.attempts, 10)))
    if after is not None:
        delay = max(delay, timedelta(seconds=min(after, 3600)))
    when = now + delay
    with store.transaction() as s:
        s.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id == entry.id)
            .values(
                attempts=entry.attempts + 1,
                next_attempt_at=when,
                claimed_until=None,
                last_error=error[:300],
            )
        )
    return when


def give_up(store: Store, entry: OutboxEntry, now: datetime, error: str) -> None:
    """Definitively impossible (Slack said so): done, marked failed; the caller logs it."""
    with store.transaction() as s:
        s.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id == entry.id)
            .values(
                done_at=now,
                failed=True,
                claimed_until=None,
                attempts=entry.attempts + 1,
                last_error=error[:300],
            )
        )


def payload(entry: OutboxEntry) -> dict[str, Any]:
    return json.loads(entry.payload)
