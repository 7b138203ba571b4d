"""The request state machine and the rules of who may do what: pure, no I/O, no clock reads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class State(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"  # decided; the credential is being issued
    ACTIVE = "active"
    ENDING = "ending"  # revocation recorded as owed; retried until Vault confirms
    DENIED = "denied"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REVOKED = "revoked"
    FAILED = "failed"


TERMINAL = frozenset(
    {State.DENIED, State.TIMED_OUT, State.CANCELLED, State.EXPIRED, State.REVOKED, State.FAILED}
)


class Event(StrEnum):
    """Audit event kinds. Transitions first, then events that do not move the state."""

    REQUESTED = "requested"
    APPROVED = "approved"
    EMERGENCY = "emergency_access"
    DENIED = "denied"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    ISSUED = "issued"
    ISSUE_FAILED = "issue_failed"
    ENDING = "ending"
    EXPIRED = "expired"
    REVOKED = "revoked"
    # no state change
    APPROVAL_RECORDED = "approval_recorded"
    REVEALED = "revealed"
    REVEAL_TAMPER = "reveal_tamper"
    REVOKE_FAILED = "revoke_failed"  # the first failure of a pending revocation
    REVOCATION_STUCK = "revocation_stuck"  # pending past the threshold: security alerted
    DELIVERED = "delivered"  # the credential reached the requester's DM
    DELIVERY_FAILED = "delivery_failed"  # it did not: that credential was revoked
    REISSUED = "reissued"  # a fresh credential for an undelivered one
    ACTIVITY = "activity"  # what the grant's database user ran, read before it was dropped
    # the post-incident review of an access that ended
    REVIEW_OPENED = "review_opened"
    REVIEW_REMINDED = "review_reminded"  # not done by its due time: reminded once, overdue
    REVIEW_CLOSED = "review_closed"
    DIGEST = "digest"  # the weekly digest owed (its event anchors the chain in Slack)
    # the audit trail looking after itself
    ANCHORED = "anchored"  # the chain's head (this event) written down in Slack, signed
    CHAIN_BROKEN = "chain_broken"  # the daily verification failed: security alerted
    PRUNED = "pruned"  # finished requests' free text removed after its retention


@dataclass(frozen=True)
class Transition:
    source: frozenset[State]
    target: State


# Every state change, by the event that records it. Anything else is refused.
TRANSITIONS: dict[Event, Transition] = {
    Event.APPROVED: Transition(frozenset({State.PENDING}), State.APPROVED),
    Event.EMERGENCY: Transition(frozenset({State.PENDING}), State.APPROVED),
    Event.DENIED: Transition(frozenset({State.PENDING}), State.DENIED),
    Event.TIMED_OUT: Transition(frozenset({State.PENDING}), State.TIMED_OUT),
    Event.CANCELLED: Transition(frozenset({State.PENDING}), State.CANCELLED),
    Event.ISSUED: Transition(frozenset({State.APPROVED}), State.ACTIVE),
    Event.ISSUE_FAILED: Transition(frozenset({State.APPROVED}), State.FAILED),
    Event.ENDING: Transition(frozenset({State.ACTIVE}), State.ENDING),
    Event.EXPIRED: Transition(frozenset({State.ENDING}), State.EXPIRED),
    Event.REVOKED: Transition(frozenset({State.ENDING}), State.REVOKED),
}


class Refused(Exception):
    """An action that the rules do not allow; the message is for the person who tried."""


def transition(event: Event, current: State) -> State:
    """The state after `event`, or Refused if `event` cannot happen in `current`."""
    rule = TRANSITIONS.get(event)
    if rule is None:
        raise ValueError(f"{event} is not a state change")
    if current not in rule.source:
        raise Refused(f"this request is already {describe_state(current)}")
    return rule.target


def describe_state(state: State) -> str:
    return {
        State.PENDING: "waiting for approval",
        State.APPROVED: "approved",
        State.ACTIVE: "active",
        State.ENDING: "being revoked",
        State.DENIED: "denied",
        State.TIMED_OUT: "timed out",
        State.CANCELLED: "cancelled",
        State.EXPIRED: "expired",
        State.REVOKED: "revoked",
        State.FAILED: "failed",
    }[state]


def check_decider(
    *,
    actor: str,
    requester: str,
    state: State,
    approvers: set[str],
    previous_deciders: Iterable[str],
) -> None:
    """Refuse a decision that the actor may not make now."""
    if actor == requester:
        raise Refused(
            "you cannot approve or deny your own request; "
            "another approver has to decide (or use emergency access where allowed)"
        )
    if actor not in approvers:
        raise Refused("you are not an approver for this resource")
    if state != State.PENDING:
        raise Refused(f"this request is already {describe_state(state)}; nothing changed")
    if actor in set(previous_deciders):
        raise Refused("you have already approved this request; it needs another approver")


def quorum_reached(approvals: Iterable[str], requester: str, needed: int) -> bool:
    """True when `needed` distinct approvers other than the requester have approved."""
    return len(set(approvals) - {requester}) >= needed


def check_revoker(*, actor: str, requester: str, approvers: set[str], state: State) -> None:
    if actor != requester and actor not in approvers:
        raise Refused("only the requester or an approver of this resource can revoke it")
    if state == State.ENDING:
        raise Refused("this access is already being revoked; it ends as soon as Vault confirms")
    if state != State.ACTIVE:
        raise Refused(f"this request is {describe_state(state)}; there is nothing to revoke")


def check_duration(duration: timedelta, maximum: timedelta) -> None:
    if duration > maximum:
        from bot.domain.durations import format_duration

        raise Refused(f"at most {format_duration(maximum)} for this resource")
