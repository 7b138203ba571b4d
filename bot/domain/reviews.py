"""Post-incident reviews, pure: when one is owed, who may close it, what a closing says."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from bot.domain.forms import masked_text, text_problem
from bot.domain.workflow import Refused
from bot.policy import Resource

MAX_NOTES = 2000


class Outcome(StrEnum):
    LEGITIMATE = "legitimate"
    NEEDS_FOLLOW_UP = "needs_follow_up"
    MISUSE = "misuse"

    @property
    def label(self) -> str:
        return {
            Outcome.LEGITIMATE: "Legitimate",
            Outcome.NEEDS_FOLLOW_UP: "Needs follow-up",
            Outcome.MISUSE: "Misuse",
        }[self]


class AlreadyReviewed(Refused):
    """Someone closed the review first; the Slack side names them (a mention is Slack's)."""

    def __init__(self, reviewer: str, outcome: str):
        super().__init__(f"this access was already reviewed by {reviewer} ({outcome})")
        self.reviewer = reviewer
        self.outcome = outcome


@dataclass(frozen=True)
class ValidReview:
    outcome: Outcome
    notes: str | None  # secrets pasted into them masked
    masked: tuple[str, ...] = ()  # the kinds of secret masked in the notes


def review_owed(*, emergency: bool, review_required: bool, resource: Resource | None) -> bool:
    """A grant made without approval owes a review once it ends; so does any grant of a
    resource whose policy says `review: always`."""
    return emergency or review_required or (resource is not None and resource.review == "always")


def check_reviewer(*, actor: str, requester: str, reviewers: Iterable[str]) -> None:
    """Refuse a reviewer who may not close this review: never the requester (even one who is
    also a reviewer of the resource), only members of the resource's reviewer groups."""
    if actor == requester:
        raise Refused("you cannot review your own access; one of its reviewers has to")
    if actor not in set(reviewers):
        raise Refused("you are not a reviewer of this resource")


def check_review(outcome: object, notes: object) -> tuple[ValidReview | None, dict[str, str]]:
    """The review form as submitted: the valid review, or errors keyed by field name
    (`outcome`, `notes`). Notes are required unless the access was legitimate."""
    errors: dict[str, str] = {}
    chosen = None
    try:
        chosen = Outcome(outcome) if isinstance(outcome, str) else None
    except ValueError:
        chosen = None
    if chosen is None:
        errors["outcome"] = "Choose an outcome."
    text = notes.strip() if isinstance(notes, str) else ""
    problem = text_problem(text, MAX_NOTES)
    if problem:
        errors["notes"] = problem
    elif not text and chosen is not None and chosen != Outcome.LEGITIMATE:
        errors["notes"] = "Say what needs following up, or what went wrong."
    if errors:
        return None, errors
    assert chosen is not None
    kept = masked_text(text, MAX_NOTES)
    return ValidReview(chosen, kept.text or None, kept.kinds), {}
