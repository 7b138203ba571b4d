"""The forwarding cursors: per sink, the last audit event it received, advanced only in the
transaction that holds the sink's row (so two replicas never send the same events)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from bot.store.tables import AuditCursor, AuditHead, Store


def ensure(store: Store, sink: str, start: str, now: datetime) -> None:
    """The sink's cursor, made if it is new: at the first event (`beginning`) or after the
    last one written so far (`now`). An existing cursor is left where it is."""
    with store.transaction() as s:
        seq = 0
        if start == "now":
            head = s.get(AuditHead, 1)
            seq = head.seq if head is not None else 0
        dialect = postgresql if store.engine.dialect.name == "postgresql" else sqlite
        s.execute(
            dialect.insert(AuditCursor)
            .values(sink=sink, seq=seq, updated_at=now, attempts=0)
            .on_conflict_do_nothing(index_elements=["sink"])
        )


def lock(s: Session, sink: str) -> AuditCursor | None:
    """The sink's cursor, locked until the transaction ends; None when another transaction
    holds it (a replica sending to this sink now). PostgreSQL only: SQLite ignores it."""
    return s.exec(
        select(AuditCursor).where(AuditCursor.sink == sink).with_for_update(skip_locked=True)
    ).first()


def get(s: Session, sink: str) -> AuditCursor | None:
    return s.exec(select(AuditCursor).where(AuditCursor.sink == sink)).first()


def advance(s: Session, sink: str, from_seq: int, to_seq: int, now: datetime) -> bool:
    """The sink has every event up to `to_seq`; False when the cursor was not at `from_seq`
    (someone else moved it: nothing is changed)."""
    moved = s.execute(
        update(AuditCursor)
        .where(AuditCursor.sink == sink, AuditCursor.seq == from_seq)
        .values(
            seq=to_seq,
            updated_at=now,
            attempts=0,
            next_attempt_at=None,
            failing_since=None,
            last_error=None,
        )
    ).rowcount
    return moved == 1


def failed(s: Session, cursor: AuditCursor, now: datetime, error: str, retry_at: datetime) -> None:
    """A failed attempt: counted, its reason kept, the next one not before `retry_at` (on
    every replica)."""
    s.execute(
        update(AuditCursor)
        .where(AuditCursor.sink == cursor.sink)
        .values(
            attempts=AuditCursor.attempts + 1,
            next_attempt_at=retry_at,
            failing_since=cursor.failing_since or now,
            last_error=error[:300],
            updated_at=now,
        )
    )


@dataclass(frozen=True)
class SinkStatus:
    sink: str
    seq: int
    lag: int  # events written and not yet received
    failing_since: datetime | None
    last_error: str | None


def status(conn: sa.Connection | Session, sinks: list[str]) -> list[SinkStatus]:
    """Each named sink's position against the chain's head (a sink without a cursor yet
    lags by the whole chain)."""
    if not sinks:
        return []
    head = conn.execute(sa.select(AuditHead.seq).where(AuditHead.id == 1)).scalar() or 0
    rows = {
        r.sink: r
        for r in conn.execute(
            sa.select(
                AuditCursor.sink,  # type: ignore[arg-type]
                AuditCursor.seq,  # type: ignore[arg-type]
                AuditCursor.failing_since,  # type: ignore[arg-type]
                AuditCursor.last_error,  # type: ignore[arg-type]
            ).where(AuditCursor.sink.in_(sinks))  # type: ignore[attr-defined]
        )
    }
    out = []
    for name in sinks:
        r = rows.get(name)
        seq = r.seq if r else 0
        out.append(
            SinkStatus(
                name,
                seq,
                max(0, head - seq),
                r.failing_since if r else None,
                r.last_error if r else None,
            )
        )
    return out
