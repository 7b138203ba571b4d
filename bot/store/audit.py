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

from bot.domain.workflow import Event
from bot.store.tables import AuditEvent, AuditHead

GENESIS = "0" * 64
REDACTED = "[redacted]"
_SENSITIVE_KEY = re.compile(r"password|secret|token|private_key|credential|wrap", re.IGNORECASE)
_SAFE_KEY = re.compile(r"accessor$|_at$|_ttl$", re.IGNORECASE)


def redact(value: Any) -> Any:
    """Replace the values of keys that may hold secrets, at any depth."""
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


def append(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: Event,
    request_id: int | None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add one event to the chain inside the caller's transaction.

    Bumping the head row first takes its write lock, so concurrent writers (threads or
    replicas) line up and every event links to exactly one predecessor.
    """
    at = at.astimezone(UTC)  # hashed exactly as the store keeps it
    seq, prev_hash = session.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(seq=AuditHead.seq + 1)
        .returning(AuditHead.seq, AuditHead.hash)
        .execution_options(synchronize_session=False)
    ).one()
    payload = canonical(redact(details or {}))
    event = AuditEvent(
        seq=seq,
        at=at,
        actor=actor,
        action=str(action),
        request_id=request_id,
        details=payload,
        prev_hash=prev_hash,
        hash="",
    )
    event.hash = event_hash(
        seq=seq,
        at=at,
        actor=actor,
        action=event.action,
        request_id=request_id,
        details=payload,
        prev_hash=prev_hash,
    )
    session.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(hash=event.hash)
        .execution_options(synchronize_session=False)
    )
    session.add(event)
    return event


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
