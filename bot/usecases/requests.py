"""Use cases of a request before access exists: ask, approve, deny, cancel, time out."""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from bot import logs
from bot.domain.anomalies import RATE_BASELINE, RATE_WINDOW, Flag, Past, flags_for
from bot.domain.forms import RequestForm, check_form, check_reason
from bot.domain.notices import Notice, NoticeKind
from bot.domain.reviews import review_owed
from bot.domain.windows import place
from bot.domain.workflow import (
    Event,
    Refused,
    State,
    check_decider,
    describe_state,
    quorum_reached,
)
from bot.store import OPEN_STATES, AccessRequest, Decision, Grant
from bot.usecases.core import SYSTEM, Core
from bot.usecases.grants import Grants

log = logging.getLogger(__name__)


class Requests:
    def __init__(self, core: Core, grants: Grants):
        self.core = core
        self.grants = grants

    # ---- asking -------------------------------------------------------------------------

    def form_errors(self, requester: str, form: RequestForm) -> dict[str, str]:
        """Inline errors for the request modal: the form itself, then what is already open."""
        policy = self.core.policy
        _, errors = check_form(policy, form)
        if form.resource in policy.resources and not policy.may_request(
            requester, str(form.resource)
        ):
            errors["resource"] = "You are not among those who may ask for this resource."
        if not errors:
            with self.core.store.read() as s:
                open_one = self._open_request(s, requester, str(form.resource))
            if open_one is not None:
                errors["resource"] = self._already_open(open_one)
        return errors

    @staticmethod
    def _open_request(s: Session, requester: str, resource: str) -> AccessRequest | None:
        """The requester's request for `resource` that is pending or live, if any."""
        return s.exec(
            select(AccessRequest).where(
                AccessRequest.requester == requester,
                AccessRequest.resource == resource,
                AccessRequest.state.in_(OPEN_STATES),  # type: ignore[attr-defined]
            )
        ).first()

    @staticmethod
    def _flags(s: Session, req: AccessRequest) -> list[Flag]:
        """What is unusual about this request, from the person's own last year."""
        since = req.created_at - RATE_WINDOW - RATE_BASELINE
        rows = s.exec(
            select(
                AccessRequest.resource,
                AccessRequest.created_at,
                AccessRequest.emergency,
                Grant.id,
            )
            .outerjoin(Grant, Grant.request_id == AccessRequest.id)  # type: ignore[arg-type]
            .where(AccessRequest.requester == req.requester, AccessRequest.created_at >= since)
        ).all()
        return flags_for(
            resource=req.resource,
            at=req.created_at,
            emergency=req.emergency,
            outside_window=req.outside_window,
            history=[Past(r, at, bool(e), g is not None) for r, at, e, g in rows],
        )

    @staticmethod
    def _already_open(req: AccessRequest) -> str:
        verb = "revoke" if req.state == State.ACTIVE else "cancel"
        return (
            f"You already have request #{req.id} for this ({describe_state(State(req.state))}); "
            f"use it, or `/breakglass {verb} {req.id}` first."
        )

    def submit(
        self, requester: str, form: RequestForm, submission_key: str | None = None
    ) -> AccessRequest:
        """Record a request; emergency requests are granted at once. The same submission
        (`submission_key`, Slack's view id) files one request however often it arrives."""
        core = self.core
        policy = core.policy  # one policy for the whole submission, whatever a reload does
        valid, errors = check_form(policy, form)
        if valid is None:
            raise Refused("; ".join(errors.values()))
        if not policy.may_request(requester, valid.resource):
            raise Refused("you are not among those who may ask for this resource")
        now = core.clock()
        placed = place(policy.windows, valid.resource, now)
        # Sealed at rest (audit.encrypt) before any lock is taken: Vault is a network away.
        # The ticket is an identifier (INC-1234), kept readable to join with the ticketing
        # system; what people write is in the justification.
        justification = core.seal(valid.justification, "Your request") or ""
        ticket = valid.ticket
        with core.store.transaction() as s:
            if submission_key is not None:
                seen = s.exec(
                    select(AccessRequest).where(AccessRequest.submission_key == submission_key)
                ).first()
                if seen is not None:
                    log.info("submission %s arrived again; it filed #%s", submission_key, seen.id)
                    return seen
            req = AccessRequest(
                requester=requester,
                resource=valid.resource,
                duration_seconds=int(valid.duration.total_seconds()),
                justification=justification,
                ticket=ticket,
                emergency=valid.emergency,
                # The rule in force when access was asked for: owed a review once it ends.
                review_required=review_owed(
                    emergency=valid.emergency,
                    review_required=False,
                    resource=policy.resources[valid.resource],
                ),
                state=State.PENDING.value,
                created_at=now,
                updated_at=now,
                timeout_at=None if valid.emergency else now + policy.approval_timeout,
                submission_key=submission_key,
                window=placed.window,
                outside_window=placed.outside,
            )
            flags = self._flags(s, req)
            req.flags = json.dumps([f.to_json() for f in flags]) if flags else None
            s.add(req)
            try:
                s.flush()
            except IntegrityError:
                # The database settles the race: one open request per person and resource,
                # one request per submission.
                s.rollback()
                again = s.exec(
                    select(AccessRequest).where(AccessRequest.submission_key == submission_key)
                ).first()
                if submission_key is not None and again is not None:
                    return again
                open_one = self._open_request(s, requester, valid.resource)
                raise Refused(
                    self._already_open(open_one) if open_one else "that did not go through"
                ) from None
            request_id = req.id
            assert request_id is not None
            # The rest of this event's handling acts for that request (its log lines say so).
            logs.bind(request_id=request_id)
            core.record(
                s,
                request_id,
                Event.REQUESTED,
                requester,
                {
                    "resource": req.resource,
                    "duration_seconds": req.duration_seconds,
                    "justification": req.justification,
                    "ticket": req.ticket,
                    "emergency": req.emergency,
                    "window": req.window,
                    "outside_window": req.outside_window,
                    "flags": [f.to_json() for f in flags],
                    **_masked_details(valid.masked),
                },
            )
            _tell_masked(core, s, request_id, requester, valid.masked)
            if valid.emergency:  # check_form refused it where the resource does not allow it
                core.move(
                    s,
                    req,
                    Event.EMERGENCY,
                    requester,
                    {
                        "decision": "approve",
                        "override": "emergency_self_approval",
                        "review_required": True,
                        "alerted": [policy.security_channel],
                    },
                    decided_at=now,
                )
                core.effects.alert(s, request_id, Notice(NoticeKind.EMERGENCY_ACCESS, request_id))
            else:
                core.effects.dm(
                    s,
                    request_id,
                    requester,
                    Notice(
                        NoticeKind.REQUEST_PENDING,
                        request_id,
                        {"resource": req.resource, "duration_seconds": req.duration_seconds},
                    ),
                )
        if valid.emergency:
            self.grants.issue(request_id)
        else:
            core.timers.at("timeout", request_id, now + policy.approval_timeout)
        with core.store.read() as s:
            return core.get(s, request_id)

    # ---- deciding -----------------------------------------------------------------------

    def approve(self, request_id: int, actor: str) -> AccessRequest:
        core = self.core
        now = core.clock()
        with core.store.transaction() as s:
            # Locked first: two approvers at once are counted one after the other.
            req = core.lock(s, request_id)
            decisions = s.exec(select(Decision).where(Decision.request_id == request_id)).all()
            self._check_decider(req, actor, [d.approver for d in decisions])
            s.add(
                Decision(request_id=request_id, approver=actor, outcome="approve", decided_at=now)
            )
            try:
                s.flush()
            except IntegrityError:
                raise Refused("you have already decided on this request; nothing changed") from None
            approvals = [d.approver for d in decisions if d.outcome == "approve"] + [actor]
            resource = core.policy.resources.get(req.resource)
            if resource is None:  # removed by a policy reload since it was asked for
                raise Refused(f"{req.resource} is no longer in the policy; nothing changed")
            needed = resource.approvals_needed(req.outside_window)
            approved = quorum_reached(approvals, req.requester, needed)
            if approved:
                core.move(
                    s,
                    req,
                    Event.APPROVED,
                    actor,
                    {
                        "decision": "approve",
                        "approvers": sorted(set(approvals)),
                        "approvals": len(set(approvals)),
                        "needed": needed,
                    },
                    decided_at=now,
                )
            else:
                core.record(
                    s,
                    request_id,
                    Event.APPROVAL_RECORDED,
                    actor,
                    {"decision": "approve", "approvals": len(set(approvals)), "needed": needed},
                    note=f"{len(set(approvals))} of {needed} approvals",
                )
        if approved:
            core.timers.cancel("timeout", request_id)
            self.grants.issue(request_id)
        with core.store.read() as s:
            return core.get(s, request_id)

    def check_can_decide(self, request_id: int, actor: str) -> None:
        """Refuse early (before a Deny modal opens) when `actor` may not decide now."""
        with self.core.store.read() as s:
            req = self.core.get(s, request_id)
        self._check_decider(req, actor)

    def _check_decider(
        self, req: AccessRequest, actor: str, previous_deciders: list[str] | None = None
    ) -> None:
        check_decider(
            actor=actor,
            requester=req.requester,
            state=State(req.state),
            approvers=self.core.policy.approver_ids(req.resource),
            previous_deciders=previous_deciders or [],
        )

    def deny(self, request_id: int, actor: str, reason: str) -> AccessRequest:
        core = self.core
        checked = check_reason(reason)
        reason = core.seal(checked.text, "Your denial") or ""
        masked = {"reason": checked.kinds} if checked.kinds else {}
        now = core.clock()
        with core.store.transaction() as s:
            req = core.lock(s, request_id)
            decisions = s.exec(select(Decision).where(Decision.request_id == request_id)).all()
            # An approver who approved may still deny before the quorum is reached.
            self._check_decider(req, actor)
            if any(d.approver == actor for d in decisions):
                s.execute(
                    update(Decision)
                    .where(Decision.request_id == request_id, Decision.approver == actor)
                    .values(outcome="deny", reason=reason, decided_at=now)
                )
            else:
                s.add(
                    Decision(
                        request_id=request_id,
                        approver=actor,
                        outcome="deny",
                        reason=reason,
                        decided_at=now,
                    )
                )
            core.move(
                s,
                req,
                Event.DENIED,
                actor,
                {"decision": "deny", "reason": reason, **_masked_details(masked)},
                note=reason,
                decided_at=now,
            )
            _tell_masked(core, s, request_id, actor, masked)
            core.effects.dm(
                s,
                request_id,
                req.requester,
                Notice(
                    NoticeKind.REQUEST_DENIED, request_id, {"resource": req.resource, "by": actor}
                ),
            )
        core.timers.cancel("timeout", request_id)
        return req

    def cancel(self, request_id: int, actor: str) -> AccessRequest:
        """The requester withdraws a request that is still waiting for a decision."""
        core = self.core
        with core.store.transaction() as s:
            req = core.lock(s, request_id)
            if actor != req.requester:
                raise Refused("only the requester can cancel a request")
            core.move(s, req, Event.CANCELLED, actor)
        core.timers.cancel("timeout", request_id)
        return req

    def time_out(self, request_id: int) -> bool:
        """End a request nobody decided on in time. False when there was nothing to do."""
        core = self.core
        now = core.clock()
        try:
            with core.store.transaction() as s:
                req = core.lock(s, request_id)
                if req.state != State.PENDING or (req.timeout_at and req.timeout_at > now):
                    return False
                core.move(
                    s,
                    req,
                    Event.TIMED_OUT,
                    SYSTEM,
                    {"timeout_seconds": int(core.policy.approval_timeout.total_seconds())},
                )
                core.effects.dm(
                    s,
                    request_id,
                    req.requester,
                    Notice(NoticeKind.REQUEST_TIMED_OUT, request_id, {"resource": req.resource}),
                )
        except Refused:
            return False
        return True


def _masked_details(masked: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """For the audit event: which fields had secrets masked, and of what kind (never what)."""
    return {"masked": {k: list(v) for k, v in masked.items()}} if masked else {}


def _tell_masked(
    core: Core, s: Session, request_id: int, user: str, masked: dict[str, tuple[str, ...]]
) -> None:
    """Whoever pasted a secret is told, privately, that it was masked (and to rotate it)."""
    if masked:
        kinds = sorted({k for v in masked.values() for k in v})
        core.effects.dm(
            s,
            request_id,
            user,
            Notice(NoticeKind.SECRETS_MASKED, request_id, {"where": list(masked), "kinds": kinds}),
        )
