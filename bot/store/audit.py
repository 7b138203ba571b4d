"""The audit log: append-only, hash-chained events; verification, export and redaction."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, select

from bot.domain.redaction import mask
from bot.domain.workflow import Event
from bot.store.tables import AuditEvent, AuditHead

GENESIS = "0" * 64
REDACTED = "[redacted]"
_SENSITIVE_KEY = re.compile(r"password|secret|token|private_key|credential|wrap", re.IGNORECASE)
_SAFE_KEY = re.compile(r"accessor$|_at$|_ttl$", re.IGNORECASE)


def redact(value: Any) -> Any:
    """Replace the values of keys that may hold secrets, at any depth; and mask the secrets
    that free text (a reason, notes, an error) may hold in any string value."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {
            k: (
                REDACTED
                if _SENSITIVE_KEY.search(str(k)) and not _SAFE_KEY.search(str(k))
                else redact(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def canonical(details: dict[str, Any]) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"), default=str)


def event_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    request_id: int | None,
    details: str,
    prev_hash: str,
) -> str:
    body = canonical(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "request_id": request_id,
            "details": details,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class NewEvent:
    """An event to add to the chain (its place and hashes are given by `append_many`)."""

    at: datetime
    actor: str
    action: Event
    request_id: int | None
    details: dict[str, Any] | None = None


def append(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: Event,
    request_id: int | None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add one event to the chain inside the caller's transaction."""
    return append_many(session, [NewEvent(at, actor, action, request_id, details)])[0]


def append_many(session: Session, new: list[NewEvent]) -> list[AuditEvent]:
    """Add events to the chain, in order, inside the caller's transaction.

    Bumping the head row first takes its write lock, so concurrent writers (threads or
    replicas) line up and every event links to exactly one predecessor. However many events,
    the head is read and written once: a batch of a hundred ends holds it no longer than one.
    """
    if not new:
        return []
    last, prev_hash = session.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(seq=AuditHead.seq + len(new))
        .returning(AuditHead.seq, AuditHead.hash)
        .execution_options(synchronize_session=False)
    ).one()
    events: list[AuditEvent] = []
    for seq, item in enumerate(new, start=last - len(new) + 1):
        at = item.at.astimezone(UTC)  # hashed exactly as the store keeps it
        event = AuditEvent(
            seq=seq,
            at=at,
            actor=item.actor,
            action=str(item.action),
            request_id=item.request_id,
            details=canonical(redact(item.details or {})),
            prev_hash=prev_hash,
            hash="",
        )
        event.hash = prev_hash = event_hash(
            seq=seq,
            at=at,
            actor=event.actor,
            action=event.action,
            request_id=event.request_id,
            details=event.details,
            prev_hash=event.prev_hash,
        )
        events.append(event)
    session.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(hash=events[-1].hash)
        .execution_options(synchronize_session=False)
    )
    session.add_all(events)
    return events


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.checked} events"
        return f"audit chain broken at event {self.broken_seq}: {self.reason}"


def verify(session: Session) -> Verification:
    """Recompute the chain from the first event; name the first broken link."""
    prev = GENESIS
    expected_seq = 1
    checked = 0
    for ev in session.exec(select(AuditEvent).order_by(AuditEvent.seq)):
        if ev.seq != expected_seq:
            return Verification(False, checked, expected_seq, "event missing (sequence gap)")
        if ev.prev_hash != prev:
            return Verification(False, checked, ev.seq, "does not link to the previous event")
        recomputed = event_hash(
            seq=ev.seq,
            at=ev.at,
            actor=ev.actor,
            action=ev.action,
            request_id=ev.request_id,
            details=ev.details,
            prev_hash=ev.prev_hash,
        )
        if recomputed != ev.hash:
            return Verification(False, checked, ev.seq, "contents changed after it was written")
        prev = ev.hash
        expected_seq += 1
        checked += 1
    head = session.exec(select(AuditHead).where(AuditHead.id == 1)).first()
    if head is not None and (head.seq != checked or head.hash != prev):
        return Verification(
            False, checked, checked + 1, f"the head records {head.seq} events; later ones removed"
        )
    return Verification(True, checked)


def export(session: Session, request_id: int | None = None) -> Iterator[dict[str, Any]]:
    """Events as dicts, oldest first, for JSON Lines export."""
    query = select(AuditEvent).order_by(AuditEvent.seq)
    if request_id is not None:
        query = query.where(AuditEvent.request_id == request_id)
    for ev in session.exec(query):
        yield {
            "seq": ev.seq,
            "at": ev.at.isoformat(),
            "actor": ev.actor,
            "action": ev.action,
            "request_id": ev.request_id,
            "details": json.loads(ev.details),
            "prev_hash": ev.prev_hash,
            "hash": ev.hash,
        }
