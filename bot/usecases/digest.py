"""The weekly digest: the last seven days against the seven before, the flagged events, the
review backlog, the audit chain's state, and the events per day for its chart.

Owing a digest is intent first, like every other effect: the digest of a period is recorded
as an audit event (which anchors the chain's head in the security channel) and an outbox row,
in one transaction; replicas whose schedules fire together owe it once (the audit head's
lock lines them up, and the later one finds the row)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlmodel import select

from bot.domain.anchors import anchor_of
from bot.domain.anomalies import reasons
from bot.domain.periods import Period
from bot.domain.windows import Window
from bot.domain.workflow import Event
from bot.store import AccessRequest, Grant, OutboxEntry, Review, audit, outbox
from bot.usecases.core import SYSTEM, Core
from bot.usecases.stats import REACHED_ACTIVE, Report, Stats

if TYPE_CHECKING:
    from bot.usecases.trail import AuditTrail

log = logging.getLogger(__name__)

DAYS = 7


@dataclass(frozen=True)
class Flagged:
    request_id: int
    resource: str
    requester: str
    created_at: datetime
    reasons: list[str]


@dataclass(frozen=True)
class Overdue:
    request_id: int
    resource: str
    requester: str
    due_at: datetime


@dataclass
class Digest:
    period: Period
    previous: Period
    now: Report
    before: Report
    flagged: list[Flagged]
    overdue: list[Overdue]
    chain_ok: bool
    chain_checked: int
    chain_problem: str
    head_seq: int
    head_hash: str
    # The chain's head as an anchor line (`breakglass audit verify --anchors` reads it).
    anchor: str = ""
    # The chart: one entry per day of the period (in the digest's time zone).
    days: list[date] = field(default_factory=list)
    events_by_resource: dict[str, list[int]] = field(default_factory=dict)
    outside_by_day: list[int] = field(default_factory=list)


class Digests:
    def __init__(self, core: Core, stats: Stats, trail: AuditTrail | None = None):
        self.core = core
        self.stats = stats
        self.trail = trail

    def build(self, end: datetime) -> Digest:
        """The digest of the week up to `end`, days counted in the digest's time zone, with
        the chain's head as an anchor (signed when the bot has a key)."""
        schedule = self.core.policy.digest
        digest = build_digest(self.stats, end, schedule.timezone if schedule else "UTC")
        signer = self.trail.signer if self.trail else None
        anchor = anchor_of(digest.head_seq, digest.head_hash, self.core.clock()).signed(signer)
        return replace(digest, anchor=anchor.line())

    def due(self, now: datetime) -> datetime | None:
        """The scheduled moment whose digest a timer firing at `now` owes (every replica
        names the same one); None when no digest is configured."""
        schedule = self.core.policy.digest
        if schedule is None:
            return None
        window = Window("digest", schedule.cron, timedelta(hours=1), schedule.timezone)
        return window.start_of(now)

    def owe(self, end: datetime) -> bool:
        """Owe the digest of the week up to `end` (a scheduled moment: every replica names
        the same one). False when it was owed already."""
        core = self.core
        key = end.isoformat()
        with core.store.transaction() as s:
            # The append takes the audit head's lock first: replicas line up here, and the
            # later one sees the earlier one's row below and owes nothing.
            recorded = core.record(s, None, Event.DIGEST, SYSTEM, {"period_end": key}, thread=False)
            seen = s.exec(
                select(OutboxEntry.id).where(
                    OutboxEntry.kind == "digest",
                    OutboxEntry.payload == outbox.encode({"end": key}),
                )
            ).first()
            if seen is not None:
                s.rollback()
                log.info("the digest up to %s is owed already (another replica)", key)
                return False
            core.effects.digest(s, key)
        log.info("digest up to %s owed (audit event %s)", key, recorded.seq)
        return True


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), zone).astimezone(UTC)


def build_digest(stats: Stats, end: datetime, tz: str = "UTC", days: int = DAYS) -> Digest:
    """The digest of the `days` whole days (in `tz`) before the day of `end`, against the
    `days` before those: a digest made on a Monday covers Monday to Sunday of last week."""
    zone = ZoneInfo(tz)
    last_day = end.astimezone(zone).date()
    period = Period(_midnight(last_day - timedelta(days=days), zone), _midnight(last_day, zone))
    previous = Period(_midnight(last_day - timedelta(days=2 * days), zone), period.start)
    now_report = stats.report(period)
    before_report = stats.report(previous)
    with stats.store.read() as s:
        flagged = [
            Flagged(
                r.id or 0,
                r.resource,
                r.requester,
                r.created_at,
                reasons(r.flags),
            )
            for r in s.exec(
                select(AccessRequest)
                .where(
                    AccessRequest.created_at >= period.start,
                    AccessRequest.created_at < period.end,
                    AccessRequest.flags.is_not(None),  # type: ignore[union-attr]
                )
                .order_by(AccessRequest.id)
            )
        ]
        overdue = [
            Overdue(req.id or 0, req.resource, req.requester, rev.due_at)
            for rev, req in s.exec(
                select(Review, AccessRequest)
                .join(AccessRequest, AccessRequest.id == Review.request_id)  # type: ignore[arg-type]
                .where(
                    Review.reviewed_at.is_(None),  # type: ignore[union-attr]
                    Review.due_at < end,
                )
                .order_by(Review.due_at)
            )
        ]
        verified = audit.verify(s)
        head_seq, head_hash = audit.head(s)
        grants = s.exec(
            select(Grant.issued_at, AccessRequest.resource, AccessRequest.outside_window)
            .join(AccessRequest, AccessRequest.id == Grant.request_id)  # type: ignore[arg-type]
            .where(
                Grant.issued_at >= period.start,
                Grant.issued_at < period.end,
                AccessRequest.state.in_([st.value for st in REACHED_ACTIVE]),  # type: ignore[attr-defined]
            )
        ).all()
    day_list = [last_day - timedelta(days=days - i) for i in range(days)]
    index = {d: i for i, d in enumerate(day_list)}
    by_resource: dict[str, list[int]] = {}
    outside = [0] * len(day_list)
    for issued_at, resource, was_outside in grants:
        i = index.get(issued_at.astimezone(zone).date())
        if i is None:
            continue
        by_resource.setdefault(resource, [0] * len(day_list))[i] += 1
        if was_outside:
            outside[i] += 1
    return Digest(
        period=period,
        previous=previous,
        now=now_report,
        before=before_report,
        flagged=flagged,
        overdue=overdue,
        chain_ok=verified.ok,
        chain_checked=verified.checked,
        chain_problem="" if verified.ok else str(verified),
        head_seq=head_seq,
        head_hash=head_hash,
        days=day_list,
        events_by_resource=by_resource,
        outside_by_day=outside,
    )
