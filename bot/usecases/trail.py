"""The audit trail looking after itself: anchoring the chain's head outside the database
(the security channel, signed with Ed25519 when a key is set), verifying it every day and
alerting when it broke, and pruning finished requests' free text after its retention
without breaking the chain (each event keeps the digest of what was pruned).

The daily round is owed once per scheduled moment however many replicas fire: the anchor
event is appended under the audit head's lock, and a replica that finds one appended since
that moment owes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update
from sqlmodel import Session, select

from bot.domain.anchors import Anchor, anchor_of, public_text
from bot.domain.notices import Notice, NoticeKind
from bot.domain.windows import Window
from bot.domain.workflow import TERMINAL, Event
from bot.store import AccessRequest, AuditEvent, Decision, Grant, Review, audit
from bot.usecases.core import SYSTEM, Core

log = logging.getLogger(__name__)

PRUNE_BATCH = 500  # requests per transaction


@dataclass(frozen=True)
class Pruned:
    cutoff: datetime
    requests: int
    events: int


class AuditTrail:
    def __init__(self, core: Core, signer: Ed25519PrivateKey | None = None):
        self.core = core
        self.signer = signer

    @property
    def public_key(self) -> str | None:
        return public_text(self.signer.public_key()) if self.signer else None

    def head(self) -> Anchor:
        """The chain's head now, signed when a key is set (what `audit anchor` prints)."""
        with self.core.store.read() as s:
            seq, hash_ = audit.head(s)
        return anchor_of(seq, hash_, self.core.clock()).signed(self.signer)

    # ---- the daily round ---------------------------------------------------------------

    def due(self, now: datetime) -> datetime:
        """The scheduled moment a timer firing at `now` stands for (every replica names the
        same one)."""
        schedule = self.core.policy.audit.anchor
        window = Window("audit", schedule.cron, timedelta(hours=1), schedule.timezone)
        return window.start_of(now) or now

    def daily(self, moment: datetime) -> Anchor | None:
        """Verify the chain (alerting the security channel when it broke), then anchor its
        head in the security channel, then prune what retention allows. None when another
        replica did this round already."""
        result = self.verify()
        anchor = self.anchor(moment, result)
        if anchor is not None and self.core.policy.retention.details is not None:
            self.prune(self.core.clock())
        return anchor

    def verify(self) -> audit.Verification:
        with self.core.store.read() as s:
            result = audit.verify(s)
        if result.ok:
            log.info("%s", result)
        else:
            log.error("%s", result)
        return result

    def anchor(self, moment: datetime, result: audit.Verification | None = None) -> Anchor | None:
        """Append the anchor event and owe its message (and the alert, when `result` says the
        chain broke), once for `moment`."""
        core = self.core
        with core.store.transaction() as s:
            event = core.record(
                s,
                None,
                Event.ANCHORED,
                SYSTEM,
                {"moment": moment.isoformat(), "signed": self.signer is not None},
                thread=False,
            )
            # The append above waited for the head's lock: an earlier replica's anchor for
            # this moment is visible now.
            earlier = s.exec(
                select(AuditEvent.seq).where(
                    AuditEvent.action == Event.ANCHORED.value,
                    AuditEvent.at >= moment,
                    AuditEvent.seq < event.seq,
                )
            ).first()
            if earlier is not None:
                s.rollback()
                log.info("the audit anchor for %s is done already (another replica)", moment)
                return None
            if result is not None and not result.ok:
                alerted = core.record(
                    s,
                    None,
                    Event.CHAIN_BROKEN,
                    SYSTEM,
                    {"broken_seq": result.broken_seq, "reason": result.reason},
                    thread=False,
                )
                core.effects.alert(
                    s,
                    None,
                    Notice(
                        NoticeKind.AUDIT_CHAIN_BROKEN,
                        None,
                        {"seq": result.broken_seq, "reason": str(result)},
                    ),
                )
                seq, hash_ = alerted.seq, alerted.hash  # the alert's event is the head now
            else:
                seq, hash_ = event.seq, event.hash
            anchor = anchor_of(seq, hash_, event.at).signed(self.signer)
            core.effects.anchor(s, anchor.line(), self.public_key)
        log.info("audit chain anchored at event %s", anchor.seq)
        return anchor

    # ---- retention ---------------------------------------------------------------------

    def prune(self, now: datetime, *, dry_run: bool = False) -> Pruned:
        """Remove the free text of requests finished longer than `retention.details` ago:
        their justification, ticket, reasons and notes, and the details of their events
        (each event keeps their digest: the chain still verifies). Events written before
        migration 0005 hash their details directly and are kept whole."""
        keep = self.core.policy.retention.details
        if keep is None:
            raise ValueError("no retention is set (retention: details: in the policy)")
        cutoff = now - keep
        if dry_run:
            with self.core.store.read() as s:
                finished = self._finished(cutoff)
                requests = s.scalar(select(sa.func.count()).select_from(finished.subquery()))
                events = s.scalar(select(sa.func.count()).where(self._prunable(finished)))
            return Pruned(cutoff, int(requests or 0), int(events or 0))
        requests = events = 0
        while True:
            with self.core.store.transaction() as s:
                ids = list(s.exec(self._finished(cutoff).limit(PRUNE_BATCH)))
                if not ids:
                    break
                n = self._prune(s, ids, now)
                requests += len(ids)
                events += n
                self.core.record(
                    s,
                    None,
                    Event.PRUNED,
                    SYSTEM,
                    {
                        "cutoff": cutoff.isoformat(),
                        "requests": len(ids),
                        "events": n,
                        "first_request": ids[0],
                        "last_request": ids[-1],
                    },
                    thread=False,
                )
        log.info("retention: pruned %s requests' free text (%s events)", requests, events)
        return Pruned(cutoff, requests, events)

    def _finished(self, cutoff: datetime) -> Any:
        """Requests finished before `cutoff`, not pruned yet, with no review still open."""
        open_review = select(Review.id).where(
            Review.request_id == AccessRequest.id,
            Review.reviewed_at.is_(None),  # type: ignore[union-attr]
        )
        return (
            select(AccessRequest.id)
            .where(
                AccessRequest.state.in_([st.value for st in TERMINAL]),  # type: ignore[attr-defined]
                AccessRequest.updated_at < cutoff,
                AccessRequest.details_pruned_at.is_(None),  # type: ignore[union-attr]
                ~sa.exists(open_review),
            )
            .order_by(AccessRequest.id)  # type: ignore[arg-type]
        )

    def _prunable(self, ids: Any) -> sa.ColumnElement[bool]:
        return sa.and_(
            AuditEvent.request_id.in_(ids),  # type: ignore[union-attr]
            AuditEvent.v == 2,
            AuditEvent.details.is_not(None),  # type: ignore[union-attr]
        )

    def _prune(self, s: Session, ids: list[int], now: datetime) -> int:
        # The requests are marked first: the append-only trigger (migration 0008) lets an
        # event's details go only once its finished request is marked pruned.
        where = AccessRequest.id.in_(ids)  # type: ignore[union-attr]
        s.execute(
            update(AccessRequest)
            .where(where)
            .values(justification="", ticket=None, details_pruned_at=now)
            .execution_options(synchronize_session=False)
        )
        if s.get_bind().dialect.name == "postgresql":
            # The append-only trigger lets this transaction remove details, and nothing else.
            s.execute(sa.text("SET LOCAL breakglass.prune = 'on'"))
        pruned = s.execute(
            update(AuditEvent)
            .where(self._prunable(ids))
            .values(details=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        s.execute(
            update(Decision)
            .where(Decision.request_id.in_(ids))  # type: ignore[attr-defined]
            .values(reason=None)
            .execution_options(synchronize_session=False)
        )
        s.execute(
            update(Grant)
            .where(Grant.request_id.in_(ids))  # type: ignore[attr-defined]
            .values(end_note=None)
            .execution_options(synchronize_session=False)
        )
        s.execute(
            update(Review)
            .where(Review.request_id.in_(ids))  # type: ignore[attr-defined]
            .values(notes=None)
            .execution_options(synchronize_session=False)
        )
        if s.get_bind().dialect.name == "postgresql":
            s.execute(sa.text("SET LOCAL breakglass.prune = 'off'"))
        return int(pruned or 0)
