"""Use cases of post-incident reviews: owed when an access ends, reminded once when overdue,
closed once by one of the resource's reviewers.

A review is owed in the very transaction that records the end (intent first), and every
change to it is a conditional UPDATE: two reviewers, a replayed submission, or two replicas
reminding at once change it once.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from bot.domain.notices import Notice, NoticeKind
from bot.domain.reviews import AlreadyReviewed, ValidReview, check_reviewer, review_owed
from bot.domain.workflow import Event, Refused
from bot.store import AccessRequest, Review, outbox
from bot.usecases.core import SYSTEM, Core

log = logging.getLogger(__name__)

DEADLINE = "review_due"  # the deadline kind (and timer) of an open review


@dataclass(frozen=True)
class ReviewItem:
    """One open review, as `/breakglass reviews` lists it."""

    request_id: int
    resource: str
    requester: str
    due_at: datetime
    overdue: bool


class Reviews:
    def __init__(self, core: Core):
        self.core = core

    # ---- owed ---------------------------------------------------------------------------

    def owe(self, s: Session, ended: list[AccessRequest]) -> list[Review]:
        """In the caller's transaction (the one recording these ends): a review for each
        request that owes one, its audit event, its thread reply (with the Review button)
        and its card update; the reminder's timer once the transaction commits."""
        core = self.core
        at = core.clock()
        due = at + core.policy.review_due
        owing = [
            r
            for r in ended
            if review_owed(
                emergency=r.emergency,
                review_required=r.review_required,
                resource=core.policy.resources.get(r.resource),
            )
        ]
        if not owing:
            return []
        reviews = [Review(request_id=r.id, owed_at=at, due_at=due) for r in owing]
        s.add_all(reviews)
        s.flush()
        core.record_many(
            s,
            [
                (
                    r.id,
                    Event.REVIEW_OPENED,
                    SYSTEM,
                    {
                        "due_at": due.isoformat(),
                        "reviewers": sorted(core.policy.reviewer_ids(r.resource) - {r.requester}),
                        "why": "emergency" if r.emergency else "resource policy",
                    },
                    "",
                )
                for r in owing
            ],
        )
        for r in owing:
            assert r.id is not None
            outbox.wake_after_commit(s, functools.partial(core.timers.at, DEADLINE, r.id, due))
            log.info("request %s: a review is owed by %s", r.id, due.isoformat())
        return reviews

    # ---- closing ------------------------------------------------------------------------

    def check_can_review(self, request_id: int, actor: str) -> None:
        """Refuse early (before the review modal opens) who may not close it, or when it is
        closed already."""
        with self.core.store.read() as s:
            req = self.core.get(s, request_id)
            review = self._review_of(s, request_id)
        self._check(req, review, actor)

    def close(self, request_id: int, actor: str, valid: ValidReview) -> Review:
        """Close the review, once: whoever comes second (another reviewer, the same
        submission again) is told who closed it."""
        core = self.core
        at = core.clock()
        notes = core.seal(valid.notes, "Your review")
        with core.store.transaction() as s:
            req = core.lock(s, request_id)  # the request first: one lock order everywhere
            review = self._review_of(s, request_id)
            self._check(req, review, actor)
            won = s.execute(
                update(Review)
                .where(
                    col(Review.request_id) == request_id,
                    col(Review.reviewed_at).is_(None),
                )
                .values(
                    reviewer=actor,
                    outcome=valid.outcome.value,
                    notes=notes,
                    reviewed_at=at,
                )
            ).rowcount
            if not won:  # lost the race after all: nothing of ours is kept
                raise self._closed_by(request_id)
            core.record(
                s,
                request_id,
                Event.REVIEW_CLOSED,
                actor,
                {
                    "outcome": valid.outcome.value,
                    "notes": notes,
                    **({"masked": {"notes": list(valid.masked)}} if valid.masked else {}),
                },
                note=notes or "",
            )
            if valid.masked:
                core.effects.dm(
                    s,
                    request_id,
                    actor,
                    Notice(
                        NoticeKind.SECRETS_MASKED,
                        request_id,
                        {"where": ["notes"], "kinds": sorted(valid.masked)},
                    ),
                )
        core.timers.cancel(DEADLINE, request_id)
        log.info("request %s: reviewed by %s (%s)", request_id, actor, valid.outcome.value)
        with core.store.read() as s:
            return self._review_of(s, request_id)

    def _check(self, req: AccessRequest, review: Review | None, actor: str) -> None:
        if review is None:
            raise Refused("no review is owed for this access (yet)")
        check_reviewer(
            actor=actor,
            requester=req.requester,
            reviewers=self.core.policy.reviewer_ids(req.resource),
        )
        if review.reviewed_at is not None:
            raise AlreadyReviewed(review.reviewer or "", review.outcome or "")

    def _closed_by(self, request_id: int) -> Refused:
        with self.core.store.read() as s:
            review = self._review_of(s, request_id)
        if review is None or review.reviewed_at is None:
            return Refused("this review just changed; try again")
        return AlreadyReviewed(review.reviewer or "", review.outcome or "")

    # ---- reminding ------------------------------------------------------------------------

    def remind(self, request_id: int) -> bool:
        """The review's due time passed and nobody closed it: remind once, in the thread
        (with the Review button) and privately to each reviewer; from now on it is overdue.
        False when there was nothing to do (closed, reminded already, not due)."""
        core = self.core
        at = core.clock()
        with core.store.transaction() as s:
            req = core.lock(s, request_id)
            won = s.execute(
                update(Review)
                .where(
                    col(Review.request_id) == request_id,
                    col(Review.reviewed_at).is_(None),
                    col(Review.reminded_at).is_(None),
                    col(Review.due_at) <= at,
                )
                .values(reminded_at=at)
            ).rowcount
            if not won:
                return False
            review = self._review_of(s, request_id)
            assert review is not None
            reviewers = sorted(core.policy.reviewer_ids(req.resource) - {req.requester})
            core.record(
                s,
                request_id,
                Event.REVIEW_REMINDED,
                SYSTEM,
                {"due_at": review.due_at.isoformat(), "reviewers": reviewers},
            )
            notice = Notice(
                NoticeKind.REVIEW_OVERDUE,
                request_id,
                {
                    "resource": req.resource,
                    "requester": req.requester,
                    "due_at": review.due_at.isoformat(),
                },
            )
            for user in reviewers:
                core.effects.dm(s, request_id, user, notice)
        log.info("request %s: review overdue; %s reviewer(s) reminded", request_id, len(reviewers))
        return True

    @staticmethod
    def due(s: Session) -> list[tuple[int, datetime]]:
        """Open reviews not yet reminded, with their due time: the `review_due` deadlines."""
        rows = s.exec(
            select(Review.request_id, Review.due_at).where(
                col(Review.reviewed_at).is_(None), col(Review.reminded_at).is_(None)
            )
        )
        return list(rows)

    # ---- listing --------------------------------------------------------------------------

    def listing(self, user: str) -> list[ReviewItem]:
        """The open reviews `user` can close, overdue ones first, then by due time."""
        core = self.core
        now = core.clock()
        with core.store.read() as s:
            rows = s.exec(
                select(Review, AccessRequest)
                .join(AccessRequest, col(AccessRequest.id) == col(Review.request_id))
                .where(col(Review.reviewed_at).is_(None))
                .order_by(col(Review.due_at), col(Review.request_id))
            ).all()
        items = [
            ReviewItem(
                request_id=req.id,
                resource=req.resource,
                requester=req.requester,
                due_at=review.due_at,
                overdue=review.reminded_at is not None or review.due_at <= now,
            )
            for review, req in rows
            if user != req.requester and user in core.policy.reviewer_ids(req.resource)
        ]
        return sorted(items, key=lambda i: (not i.overdue, i.due_at, i.request_id))

    @staticmethod
    def _review_of(s: Session, request_id: int) -> Review | None:
        return s.exec(select(Review).where(col(Review.request_id) == request_id)).first()
