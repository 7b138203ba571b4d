"""The audit log: append-only, hash-chained events; verification, export and redaction."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import update
from sqlmodel import Session, select

from bot.domain.anchors import Anchor
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


HASH_VERSION = 2


def digest(details: str) -> str:
    """The digest of an event's stored details: what a version-2 hash covers."""
    return hashlib.sha256(details.encode()).hexdigest()


def _at(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def event_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    request_id: int | None,
    details_hash: str,
    prev_hash: str,
) -> str:
    """A version-2 event's hash: every column, the details by their digest, and the previous
    hash. Pruning the details keeps their digest, so the chain still verifies."""
    return _v2(seq, _at(at), actor, action, request_id, details_hash, prev_hash)


_esc = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _v2(
    seq: int,
    at: str,
    actor: str,
    action: str,
    request_id: int | None,
    details_hash: str | None,
    prev_hash: str,
) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces, ASCII) of a version-2 event's
    fields, spelled out rather than built with json.dumps: verifying a million events spends
    its time here. `canonical()` of the same dict gives the same text (a test holds them)."""
    body = (
        f'{{"action":{_esc(action)},"actor":{_esc(actor)},"at":{_esc(at)},'
        f'"details_hash":{"null" if details_hash is None else _esc(details_hash)},'
        f'"prev_hash":{_esc(prev_hash)},'
        f'"request_id":{"null" if request_id is None else int(request_id)},'
        f'"seq":{int(seq)},"v":2}}'
    )
    return hashlib.sha256(body.encode()).hexdigest()


def event_hash_v1(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    request_id: int | None,
    details: str,
    prev_hash: str,
) -> str:
    """The hash of events written before migration 0005: it covers the details themselves."""
    body = canonical(
        {
            "seq": seq,
            "at": _at(at),
            "actor": actor,
            "action": action,
            "request_id": request_id,
            "details": details,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(body.encode()).hexdigest()


def head(session: Session) -> tuple[int, str]:
    """The chain's last sequence number and hash (0 and the genesis hash when empty)."""
    row = session.get(AuditHead, 1)
    return (row.seq, row.hash) if row else (0, GENESIS)


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
        details = canonical(redact(item.details or {}))
        details_hash = digest(details)
        prev_hash = event_hash(
            seq=seq,
            at=at,
            actor=item.actor,
            action=str(item.action),
            request_id=item.request_id,
            details_hash=details_hash,
            prev_hash=(link := prev_hash),
        )
        events.append(
            AuditEvent(
                seq=seq,
                at=at,
                actor=item.actor,
                action=str(item.action),
                request_id=item.request_id,
                details=details,
                details_hash=details_hash,
                v=HASH_VERSION,
                prev_hash=link,
                hash=prev_hash,
            )
        )
    session.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(hash=events[-1].hash)
        .execution_options(synchronize_session=False)
    )
    # One executemany, no unit of work: the events are returned as values, never flushed
    # again (nothing may change an event once written).
    session.execute(
        sa.insert(AuditEvent.__table__),  # type: ignore[attr-defined]
        [
            {
                "seq": e.seq,
                "at": e.at,
                "actor": e.actor,
                "action": e.action,
                "request_id": e.request_id,
                "details": e.details,
                "details_hash": e.details_hash,
                "v": e.v,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
            }
            for e in events
        ],
    )
    return events


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""
    pruned: int = 0  # events whose details were pruned after their retention
    anchors: int = 0  # anchors the chain was checked against
    head_seq: int = 0
    head_hash: str = GENESIS

    def __str__(self) -> str:
        if not self.ok:
            where = f"at event {self.broken_seq}" if self.broken_seq else ""
            return f"audit chain broken {where}: {self.reason}".replace("  ", " ")
        text = f"audit chain intact: {self.checked} events"
        extras = []
        if self.pruned:
            extras.append(f"{self.pruned} with details pruned")
        if self.anchors:
            extras.append(f"{self.anchors} anchors matched")
        return text + (f" ({', '.join(extras)})" if extras else "")


_ROWS = 10_000  # fetched at a time: verifying a million events holds a few MB


def verify(session: Session, anchors: Sequence[Anchor] = ()) -> Verification:
    """Recompute the chain from the first event and name the first broken link; then hold
    it against `anchors` (heads written down outside the database), which a truncated or
    rewritten chain cannot match. Needs no decryption key: hashes cover the stored text."""
    wanted = {a.seq for a in anchors}
    at_anchor: dict[int, str] = {0: GENESIS}  # an anchor of the empty chain (`audit anchor`)
    prev = GENESIS
    checked = pruned = 0
    postgres = session.get_bind().dialect.name == "postgresql"
    rows = session.execute(
        _ROWS_PG if postgres else _ROWS_SQLITE, execution_options={"yield_per": _ROWS}
    )
    sha = hashlib.sha256
    v2 = _v2
    for seq, at, actor, action, request_id, details, details_hash, v, prev_hash, hash_ in rows:
        if seq != checked + 1:
            return _broken(checked, checked + 1, "event missing (sequence gap)", pruned)
        if prev_hash != prev:
            return _broken(checked, seq, "does not link to the previous event", pruned)
        if not postgres:
            at = _sqlite_at(at)
        if v == 2:
            if details is None:
                pruned += 1
            elif details_hash != sha(details.encode()).hexdigest():
                return _broken(checked, seq, "details changed after it was written", pruned)
            recomputed = v2(seq, at, actor, action, request_id, details_hash, prev_hash)
        elif v == 1 and details is not None:
            recomputed = event_hash_v1(
                seq=seq,
                at=datetime.fromisoformat(at),
                actor=actor,
                action=action,
                request_id=request_id,
                details=details,
                prev_hash=prev_hash,
            )
        else:
            return _broken(
                checked, seq, "details removed from an event whose hash covers them", pruned
            )
        if recomputed != hash_:
            return _broken(checked, seq, "contents changed after it was written", pruned)
        if seq in wanted:
            at_anchor[seq] = hash_
        prev = hash_
        checked += 1
    head = session.exec(select(AuditHead).where(AuditHead.id == 1)).first()
    if head is not None and (head.seq != checked or head.hash != prev):
        return _broken(
            checked, checked + 1, f"the head records {head.seq} events; later ones removed", pruned
        )
    for anchor in sorted(anchors, key=lambda a: a.seq):
        when = anchor.at.strftime("%Y-%m-%d %H:%M:%SZ")
        where = f" ({anchor.where})" if anchor.where else ""
        if anchor.seq > checked:
            return _broken(
                checked,
                checked + 1,
                f"truncated: the anchor of {when}{where} names event {anchor.seq}, "
                f"the chain ends at {checked}",
                pruned,
            )
        if at_anchor.get(anchor.seq) != anchor.hash:
            return _broken(
                checked,
                anchor.seq,
                f"rewritten: event {anchor.seq} differs from the anchor of {when}{where}",
                pruned,
            )
    return Verification(
        True, checked, pruned=pruned, anchors=len(anchors), head_seq=checked, head_hash=prev
    )


# The rows as stored, with no per-row type processing: the time as the hash spells it
# (ISO 8601, microseconds, UTC), made by PostgreSQL, or from SQLite's stored text.
_ROWS_PG = sa.text(
    "SELECT seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\\:MI\\:SS.US\"+00:00\"'), "
    "actor, action, request_id, details, details_hash, v, prev_hash, hash "
    "FROM audit_event ORDER BY seq"
)
_ROWS_SQLITE = sa.text(
    "SELECT seq, at, actor, action, request_id, details, details_hash, v, prev_hash, hash "
    "FROM audit_event ORDER BY seq"
)


def _sqlite_at(stored: str) -> str:
    """SQLAlchemy keeps SQLite times as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC, by our column
    type); anything else is parsed the slow way."""
    if len(stored) == 26 and stored[10] == " ":
        return f"{stored[:10]}T{stored[11:]}+00:00"
    return _at(datetime.fromisoformat(stored).replace(tzinfo=UTC))


def _broken(checked: int, seq: int, reason: str, pruned: int) -> Verification:
    return Verification(False, checked, seq, reason, pruned=pruned)


def export(session: Session, request_id: int | None = None) -> Iterator[dict[str, Any]]:
    """Events as dicts (spelled by `audit_stream.as_dict`, as the export and the forwarders
    send them: every column, so the receiver can verify), oldest first."""
    from bot.store.audit_stream import as_dict

    table = AuditEvent.__table__  # type: ignore[attr-defined]
    query = sa.select(table).order_by(table.c.seq)
    if request_id is not None:
        query = query.where(table.c.request_id == request_id)
    for row in session.execute(query, execution_options={"yield_per": _ROWS}):
        yield as_dict(row)
