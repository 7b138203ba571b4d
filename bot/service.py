"""Use cases: request, approve, deny, break the glass, issue, reveal, revoke, expire, time out.

Orchestrates the store, the providers, the timers, the audit log and the notifier. Every
state change is a conditional UPDATE plus exactly one audit event in one transaction; people
are told after the commit, so a failing Slack call never loses a recorded fact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from bot import audit
from bot.durations import DurationError, format_duration, parse_duration
from bot.policy import Policy, Resource
from bot.store import AccessRequest, AuditEvent, Decision, Grant, Store
from bot.workflow import (
    Event,
    Refused,
    State,
    check_decider,
    check_duration,
    check_revoker,
    describe_state,
    quorum_reached,
    transition,
)
from providers import (
    GrantSpec,
    ProviderError,
    VaultBackend,
    WrapTokenInvalid,
    make_provider,
)

log = logging.getLogger(__name__)

SYSTEM = "breakglass"  # the actor of timer-driven events
CREDENTIAL_MESSAGE_EVENTS = frozenset({Event.REVEALED, Event.REVOKED, Event.EXPIRED})
ISSUE_INTERRUPTED_AFTER = timedelta(minutes=5)
OPEN_STATES = (State.PENDING.value, State.APPROVED.value, State.ACTIVE.value)
DONE_KEYS = {"expire": "expired", "timeout": "timed_out", "interrupted": "interrupted"}
MIN_JUSTIFICATION = 15


def utcnow() -> datetime:
    return datetime.now(UTC)


class NotFound(Refused):
    """No such request."""


@dataclass
class Card:
    """Everything a message about one request shows."""

    request: AccessRequest
    resource: Resource
    approvers: list[str]
    approvals: list[str] = field(default_factory=list)
    denied_by: str | None = None
    deny_reason: str | None = None
    grant: Grant | None = None
    # The audit event a message is about: its sequence and hash go into the thread, so Slack
    # witnesses the chain (a rewritten database no longer matches what the thread shows).
    event: AuditEvent | None = None

    @property
    def needed(self) -> int:
        return self.resource.approvals

    @property
    def state(self) -> State:
        return State(self.request.state)

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=self.request.duration_seconds)


class Notifier(Protocol):
    """How the service reaches people; the Slack adapter implements it."""

    def open_thread(self, card: Card) -> tuple[str, str] | None: ...

    def record(self, card: Card, event: Event, actor: str, note: str = "") -> None: ...

    def tell(self, user: str, text: str) -> None: ...

    def deliver(self, card: Card, wrapping_token: str) -> tuple[str, str] | None: ...

    def update_credential(self, card: Card) -> None: ...

    def alert(self, card: Card, text: str) -> None: ...


class Timers(Protocol):
    def at(self, kind: str, request_id: int, when: datetime) -> None: ...

    def cancel(self, kind: str, request_id: int) -> None: ...


class NoTimers:
    """Timers that do nothing: the periodic sweep alone handles deadlines."""

    def at(self, kind: str, request_id: int, when: datetime) -> None:
        pass

    def cancel(self, kind: str, request_id: int) -> None:
        pass


@dataclass(frozen=True)
class RequestForm:
    """A request as typed into the modal, before checks."""

    resource: str | None
    duration: str | None
    justification: str | None
    ticket: str | None = None
    emergency: bool = False


@dataclass(frozen=True)
class ValidRequest:
    resource: str
    duration: timedelta
    justification: str
    ticket: str | None
    emergency: bool


def check_form(policy: Policy, form: RequestForm) -> tuple[ValidRequest | None, dict[str, str]]:
    """Check a request form; return the valid request, or errors keyed by field name."""
    errors: dict[str, str] = {}
    res = policy.resources.get(form.resource or "")
    if not form.resource:
        errors["resource"] = "Choose a resource."
    elif res is None:
        errors["resource"] = f"Unknown resource {form.resource!r}."
    duration = None
    try:
        duration = parse_duration(form.duration or "")
        if res is not None:
            check_duration(duration, res.max_duration)
    except DurationError as exc:
        errors["duration"] = str(exc)[0].upper() + str(exc)[1:] + "."
    except Refused as exc:
        errors["duration"] = f"Too long: {exc}."
    justification = (form.justification or "").strip()
    if len(justification) < MIN_JUSTIFICATION:
        errors["justification"] = (
            f"Say why you need it (at least {MIN_JUSTIFICATION} characters): "
            "what is broken, and what you will do."
        )
    if form.emergency and res is not None and not res.emergency:
        errors["emergency"] = "Emergency access is not allowed for this resource; ask for approval."
    if errors:
        return None, errors
    assert res is not None and duration is not None and form.resource
    ticket = (form.ticket or "").strip() or None
    return ValidRequest(form.resource, duration, justification, ticket, form.emergency), {}


class BreakglassService:
    def __init__(
        self,
        store: Store,
        policy: Policy,
        backend: VaultBackend,
        notifier: Notifier,
        *,
        timers: Timers | None = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.store = store
        self.policy = policy
        self.backend = backend
        self.notifier = notifier
        self.timers: Timers = timers or NoTimers()
        self.clock = clock

    # ---- reading ----------------------------------------------------------------------

    def card(
        self, request_id: int, session: Session | None = None, event: Event | None = None
    ) -> Card:
        """What messages about the request show; with `event`, also the latest audit event
        of that kind, for the thread reply that reports it."""
        if session is None:
            with self.store.read() as s:
                return self.card(request_id, s, event)
        req = session.get(AccessRequest, request_id)
        if req is None:
            raise NotFound(f"there is no request #{request_id}")
        decisions = session.exec(
            select(Decision).where(Decision.request_id == request_id).order_by(Decision.id)
        ).all()
        denial = next((d for d in decisions if d.outcome == "deny"), None)
        grant = session.exec(select(Grant).where(Grant.request_id == request_id)).first()
        resource = self.policy.resources.get(req.resource)
        if resource is None:  # removed from the policy since; show what we can
            resource = Resource(provider="unknown", approvers=["-"], description="(removed)")
        return Card(
            request=req,
            resource=resource,
            approvers=sorted(self.policy.approver_ids(req.resource))
            if req.resource in self.policy.resources
            else [],
            approvals=[d.approver for d in decisions if d.outcome == "approve"],
            denied_by=denial.approver if denial else None,
            deny_reason=denial.reason if denial else None,
            grant=grant,
            event=None
            if event is None
            else session.exec(
                select(AuditEvent)
                .where(AuditEvent.request_id == request_id, AuditEvent.action == event.value)
                .order_by(AuditEvent.seq.desc())  # type: ignore[union-attr]
            ).first(),
        )

    # ---- transitions --------------------------------------------------------------------

    def _move(
        self,
        session: Session,
        req: AccessRequest,
        event: Event,
        actor: str,
        details: dict[str, Any] | None = None,
        **values: Any,
    ) -> AccessRequest:
        """Apply one transition with its audit event; only one racer can win it."""
        current = State(req.state)
        target = transition(event, current)
        now = self.clock()
        result = session.execute(
            update(AccessRequest)
            .where(AccessRequest.id == req.id, AccessRequest.state == current.value)
            .values(state=target.value, updated_at=now, **values)
        )
        if result.rowcount != 1:
            session.rollback()
            fresh = session.get(AccessRequest, req.id)
            raise Refused(
                f"this request just changed (now {fresh.state if fresh else 'gone'}); "
                "nothing changed"
            )
        audit.append(
            session,
            at=now,
            actor=actor,
            action=event,
            request_id=req.id,
            details={"from": current.value, "to": target.value, **(details or {})},
        )
        session.refresh(req)
        return req

    def _after(self, request_id: int, event: Event, actor: str, note: str = "") -> Card:
        """Tell the thread and refresh the card; a Slack failure is logged, never raised."""
        card = self.card(request_id, event=event)
        try:
            self.notifier.record(card, event, actor, note)
        except Exception:
            log.exception("could not post %s for request %s to Slack", event, request_id)
        if event in CREDENTIAL_MESSAGE_EVENTS and card.grant and card.grant.dm_ts:
            # The requester's message drops the spent token and the buttons that no longer apply.
            self._safe(self.notifier.update_credential, card)
        return card

    def form_errors(self, requester: str, form: RequestForm) -> dict[str, str]:
        """Inline errors for the request modal: the form itself, then what is already open."""
        _, errors = check_form(self.policy, form)
        if form.resource in self.policy.resources and not self.policy.may_request(
            requester, form.resource
        ):
            errors["resource"] = "You are not among those who may ask for this resource."
        if not errors:
            with self.store.read() as s:
                open_one = self._open_request(s, requester, form.resource or "")
            if open_one is not None:
                errors["resource"] = self._already_open(open_one)
        return errors

    @staticmethod
    def _open_request(s: Session, requester: str, resource: str) -> AccessRequest | None:
        """The requester's request for `resource` that is pending or active, if any."""
        return s.exec(
            select(AccessRequest).where(
                AccessRequest.requester == requester,
                AccessRequest.resource == resource,
                AccessRequest.state.in_(OPEN_STATES),  # type: ignore[attr-defined]
            )
        ).first()

    @staticmethod
    def _already_open(req: AccessRequest) -> str:
        verb = "revoke" if req.state == State.ACTIVE else "cancel"
        return (
            f"You already have request #{req.id} for this ({describe_state(State(req.state))}); "
            f"use it, or `/breakglass {verb} {req.id}` first."
        )

    def submit(self, requester: str, form: RequestForm) -> AccessRequest:
        """Record a request; emergency requests are granted at once."""
        valid, errors = check_form(self.policy, form)
        if valid is None:
            raise Refused("; ".join(errors.values()))
        if not self.policy.may_request(requester, valid.resource):
            raise Refused("you are not among those who may ask for this resource")
        now = self.clock()
        with self.store.transaction() as s:
            # One open request per person and resource: credentials do not pile up.
            open_one = self._open_request(s, requester, valid.resource)
            if open_one is not None:
                raise Refused(self._already_open(open_one))
            req = AccessRequest(
                requester=requester,
                resource=valid.resource,
                duration_seconds=int(valid.duration.total_seconds()),
                justification=valid.justification,
                ticket=valid.ticket,
                emergency=valid.emergency,
                review_required=valid.emergency,
                state=State.PENDING.value,
                created_at=now,
                updated_at=now,
                timeout_at=None if valid.emergency else now + self.policy.approval_timeout,
            )
            s.add(req)
            s.flush()
            requested = audit.append(
                s,
                at=now,
                actor=requester,
                action=Event.REQUESTED,
                request_id=req.id,
                details={
                    "resource": req.resource,
                    "duration_seconds": req.duration_seconds,
                    "justification": req.justification,
                    "ticket": req.ticket,
                    "emergency": req.emergency,
                },
            )
        request_id = req.id
        assert request_id is not None
        card = self.card(request_id)
        card.event = requested
        try:
            where = self.notifier.open_thread(card)
        except Exception:
            log.exception("could not open the audit thread for request %s", request_id)
            where = None
        if where:
            with self.store.transaction() as s:
                s.execute(
                    update(AccessRequest)
                    .where(AccessRequest.id == request_id)
                    .values(channel=where[0], thread_ts=where[1])
                )
        if valid.emergency:  # check_form refused it where the resource does not allow it
            with self.store.transaction() as s:
                req = s.get(AccessRequest, request_id)
                self._move(
                    s,
                    req,
                    Event.EMERGENCY,
                    requester,
                    {"review_required": True},
                    decided_at=now,
                )
            card = self._after(request_id, Event.EMERGENCY, requester)
            self._safe(self.notifier.alert, card, "Emergency access: granted without approval")
            self._issue(request_id)
        else:
            self.timers.at("timeout", request_id, now + self.policy.approval_timeout)
            self._safe(
                self.notifier.tell,
                requester,
                f"Your request #{request_id} for *{req.resource}* "
                f"({format_duration(valid.duration)}) is waiting for approval.",
            )
        with self.store.read() as s:
            return s.get(AccessRequest, request_id)

    def approve(self, request_id: int, actor: str) -> AccessRequest:
        now = self.clock()
        with self.store.transaction() as s:
            req = self._get(s, request_id)
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
            needed = self.policy.resources[req.resource].approvals
            if quorum_reached(approvals, req.requester, needed):
                self._move(
                    s,
                    req,
                    Event.APPROVED,
                    actor,
                    {"approvers": sorted(set(approvals))},
                    decided_at=now,
                )
                approved = True
            else:
                audit.append(
                    s,
                    at=now,
                    actor=actor,
                    action=Event.APPROVAL_RECORDED,
                    request_id=request_id,
                    details={"approvals": len(set(approvals)), "needed": needed},
                )
                approved = False
        if approved:
            self.timers.cancel("timeout", request_id)
            self._after(request_id, Event.APPROVED, actor)
            self._issue(request_id)
        else:
            self._after(
                request_id,
                Event.APPROVAL_RECORDED,
                actor,
                f"{len(set(approvals))} of {needed} approvals",
            )
        with self.store.read() as s:
            return s.get(AccessRequest, request_id)

    def check_can_decide(self, request_id: int, actor: str) -> None:
        """Refuse early (before a Deny modal opens) when `actor` may not decide now."""
        with self.store.read() as s:
            req = self._get(s, request_id)
        self._check_decider(req, actor)

    def _check_decider(
        self, req: AccessRequest, actor: str, previous_deciders: list[str] | None = None
    ) -> None:
        check_decider(
            actor=actor,
            requester=req.requester,
            state=State(req.state),
            approvers=self.policy.approver_ids(req.resource),
            previous_deciders=previous_deciders or [],
        )

    def deny(self, request_id: int, actor: str, reason: str) -> AccessRequest:
        reason = (reason or "").strip()
        if not reason:
            raise Refused("say why you deny it")
        now = self.clock()
        with self.store.transaction() as s:
            req = self._get(s, request_id)
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
            self._move(s, req, Event.DENIED, actor, {"reason": reason}, decided_at=now)
        self.timers.cancel("timeout", request_id)
        self._after(request_id, Event.DENIED, actor, reason)
        self._safe(
            self.notifier.tell,
            req.requester,
            f"Your request #{request_id} for *{req.resource}* was denied by <@{actor}>.",
        )
        return req

    def cancel(self, request_id: int, actor: str) -> AccessRequest:
        """The requester withdraws a request that is still waiting for a decision."""
        with self.store.transaction() as s:
            req = self._get(s, request_id)
            if actor != req.requester:
                raise Refused("only the requester can cancel a request")
            self._move(s, req, Event.CANCELLED, actor)
        self.timers.cancel("timeout", request_id)
        self._after(request_id, Event.CANCELLED, actor)
        return req

    def time_out(self, request_id: int) -> bool:
        """End a request nobody decided on in time. False when there was nothing to do."""
        now = self.clock()
        try:
            with self.store.transaction() as s:
                req = self._get(s, request_id)
                if req.state != State.PENDING or (req.timeout_at and req.timeout_at > now):
                    return False
                self._move(
                    s,
                    req,
                    Event.TIMED_OUT,
                    SYSTEM,
                    {"timeout_seconds": int(self.policy.approval_timeout.total_seconds())},
                )
        except Refused:
            return False
        self._after(request_id, Event.TIMED_OUT, SYSTEM)
        self._safe(
            self.notifier.tell,
            req.requester,
            f"Your request #{request_id} for *{req.resource}* timed out without a "
            "decision. Ask again, or use emergency access if the resource allows it.",
        )
        return True

    # ---- issue and deliver ----------------------------------------------------------------

    def _issue(self, request_id: int) -> None:
        with self.store.read() as s:
            req = self._get(s, request_id)
        res = self.policy.resources[req.resource]
        spec = GrantSpec(
            request_id=request_id,
            resource=req.resource,
            requester=req.requester,
            duration=timedelta(seconds=req.duration_seconds),
            wrap_ttl=self.policy.wrap_ttl,
            options=res.options,
        )
        # Our clock starts the grant just before Vault's TTL does: the bot revokes first and
        # Vault's own expiry stays the backstop.
        issued_at = self.clock()
        try:
            provider = make_provider(res.provider, self.backend, res.options)
            issued = provider.issue(spec)
        except Exception as exc:
            if isinstance(exc, ProviderError):
                reason = str(exc)
                log.warning("issuing request %s failed: %s", request_id, reason)
            else:  # a bug of ours: never leave the request stuck in "approved"
                reason = "internal error (see the bot's log)"
                log.exception("issuing request %s failed", request_id)
            self._fail_issue(request_id, reason)
            return
        # The grant ends when Vault ends it: never promise more than Vault gave.
        lifetime = min(spec.duration, issued.expires_at - issued.issued_at)
        capped = lifetime < spec.duration
        try:
            with self.store.transaction() as s:
                grant = Grant(
                    request_id=request_id,
                    provider=res.provider,
                    identity=issued.identity,
                    token_accessor=issued.token_accessor,
                    lease_id=issued.lease_id,
                    wrap_accessor=issued.wrap_accessor,
                    wrap_expires_at=issued.wrap_expires_at,
                    issued_at=issued_at,
                    expires_at=issued_at + lifetime,
                )
                s.add(grant)
                self._move(
                    s,
                    self._get(s, request_id),
                    Event.ISSUED,
                    SYSTEM,
                    {
                        "provider": res.provider,
                        "identity": issued.identity,
                        "lease_id": issued.lease_id,
                        "token_accessor": issued.token_accessor,
                        "expires_at": grant.expires_at.isoformat(),
                        **(
                            {"capped_by_vault_seconds": int(lifetime.total_seconds())}
                            if capped
                            else {}
                        ),
                    },
                )
        except Exception:
            # Never leave a live credential that the database does not know about.
            self.backend.revoke(issued.token_accessor, issued.lease_id)
            raise
        self.timers.at("expire", request_id, grant.expires_at)
        note = (
            f"Vault allowed only {format_duration(lifetime)} of the "
            f"{format_duration(spec.duration)} asked (a max_ttl or the bot token's own TTL)"
            if capped
            else ""
        )
        card = self._after(request_id, Event.ISSUED, SYSTEM, note)
        try:
            where = self.notifier.deliver(card, issued.wrapping_token)
        except Exception:
            # The token is lost with the message; the requester can revoke and ask again.
            log.exception("could not deliver the credential of request %s", request_id)
            return
        if where:
            with self.store.transaction() as s:
                s.execute(
                    update(Grant)
                    .where(Grant.id == grant.id)
                    .values(dm_channel=where[0], dm_ts=where[1])
                )

    def _fail_issue(self, request_id: int, reason: str) -> bool:
        try:
            with self.store.transaction() as s:
                req = self._get(s, request_id)
                self._move(s, req, Event.ISSUE_FAILED, SYSTEM, {"error": reason})
        except Refused:
            return False
        self._after(request_id, Event.ISSUE_FAILED, SYSTEM, reason)
        self._safe(
            self.notifier.tell,
            req.requester,
            f"Request #{request_id} was approved but the credential could not be "
            f"issued: {reason}. Security has been told; ask again once it is fixed.",
        )
        return True

    def reveal(self, request_id: int, actor: str, wrapping_token: str) -> dict[str, Any]:
        """Unwrap the requester's credential for the reveal modal. Single use."""
        now = self.clock()
        with self.store.read() as s:
            req = self._get(s, request_id)
            grant = s.exec(select(Grant).where(Grant.request_id == request_id)).first()
        if actor != req.requester:
            raise Refused("only the requester can reveal this credential")
        if req.state != State.ACTIVE or grant is None:
            raise Refused(f"this access is {req.state}; the credential no longer works")
        if grant.revealed_at is not None:
            raise Refused(
                "this credential was already revealed once (it is single-use); "
                "if you lost it, revoke this access and ask again"
            )
        try:
            payload = self.backend.unwrap(wrapping_token)
        except WrapTokenInvalid:
            if grant.wrap_expires_at and now >= grant.wrap_expires_at:
                raise Refused(
                    "the credential's wrapping token has expired unused; "
                    "revoke this access and ask again"
                ) from None
            self._tamper(request_id, actor)
            raise Refused(
                "this credential had already been unwrapped by someone before you clicked "
                "Reveal. Security has been alerted and the access revoked; ask again."
            ) from None
        with self.store.transaction() as s:
            s.execute(update(Grant).where(Grant.id == grant.id).values(revealed_at=now))
            audit.append(
                s,
                at=now,
                actor=actor,
                action=Event.REVEALED,
                request_id=request_id,
                details={"identity": grant.identity},
            )
        self._after(request_id, Event.REVEALED, actor)
        return payload

    def _tamper(self, request_id: int, actor: str) -> None:
        now = self.clock()
        with self.store.transaction() as s:
            audit.append(
                s,
                at=now,
                actor=actor,
                action=Event.REVEAL_TAMPER,
                request_id=request_id,
                details={"reason": "wrapping token already unwrapped"},
            )
        card = self._after(request_id, Event.REVEAL_TAMPER, actor)
        self._safe(
            self.notifier.alert,
            card,
            "Tamper alert: the credential's wrapping token was unwrapped before its "
            "owner revealed it. Revoking now.",
        )
        try:
            self._end(request_id, Event.REVOKED, SYSTEM, "wrapping token already unwrapped")
        except Refused:
            pass

    # ---- ending -----------------------------------------------------------------------

    def revoke(self, request_id: int, actor: str, reason: str = "revoked early") -> AccessRequest:
        with self.store.read() as s:
            req = self._get(s, request_id)
        check_revoker(
            actor=actor,
            requester=req.requester,
            approvers=self.policy.approver_ids(req.resource),
            state=State(req.state),
        )
        return self._end(request_id, Event.REVOKED, actor, reason)

    def expire(self, request_id: int) -> bool:
        """End an active grant whose time is up. False when there was nothing to do."""
        with self.store.read() as s:
            req = self._get(s, request_id)
            grant = s.exec(select(Grant).where(Grant.request_id == request_id)).first()
        if req.state != State.ACTIVE or grant is None or grant.expires_at > self.clock():
            return False
        try:
            self._end(request_id, Event.EXPIRED, SYSTEM, "expired")
        except Refused:
            return False
        return True

    def _end(self, request_id: int, event: Event, actor: str, reason: str) -> AccessRequest:
        """Revoke in Vault first, then record: the database never says "ended" while the
        credential still works. Failure to revoke is recorded and retried by the sweep."""
        with self.store.read() as s:
            req = self._get(s, request_id)
            grant = s.exec(select(Grant).where(Grant.request_id == request_id)).first()
        if req.state != State.ACTIVE or grant is None:
            raise Refused(f"this request is {req.state}; there is nothing to revoke")
        try:
            # Every provider issues through a per-grant child token, so ending a grant is the
            # same for all and needs nothing from the policy (the resource may be gone since).
            self.backend.revoke(grant.token_accessor, grant.lease_id)
        except ProviderError as exc:
            with self.store.transaction() as s:
                audit.append(
                    s,
                    at=self.clock(),
                    actor=actor,
                    action=Event.REVOKE_FAILED,
                    request_id=request_id,
                    details={"error": str(exc)},
                )
            self._after(request_id, Event.REVOKE_FAILED, actor, str(exc))
            raise Refused(
                f"Vault could not revoke it ({exc}); it will be retried, and Vault ends it by "
                "itself at the lease's expiry"
            ) from None
        now = self.clock()
        with self.store.transaction() as s:
            req = self._get(s, request_id)
            self._move(s, req, event, actor, {"reason": reason, "identity": grant.identity})
            s.execute(
                update(Grant)
                .where(Grant.id == grant.id)
                .values(ended_at=now, ended_by=actor, end_reason=event.value)
            )
        self.timers.cancel("expire", request_id)
        note = "" if event == Event.EXPIRED else reason
        self._after(request_id, event, actor, note)
        what = "expired and was revoked" if event == Event.EXPIRED else f"was revoked by <@{actor}>"
        self._safe(
            self.notifier.tell,
            req.requester,
            f"Your access #{request_id} to *{req.resource}* {what}; "
            "the credential no longer works.",
        )
        return req

    # ---- deadlines ----------------------------------------------------------------------

    def deadlines(self) -> list[tuple[str, int, datetime]]:
        """Every pending deadline, from the database: (kind, request id, when)."""
        out: list[tuple[str, int, datetime]] = []
        with self.store.read() as s:
            for req in s.exec(select(AccessRequest).where(AccessRequest.state == "pending")):
                if req.timeout_at:
                    out.append(("timeout", req.id, req.timeout_at))
            active = s.exec(
                select(Grant, AccessRequest)
                .join(AccessRequest, AccessRequest.id == Grant.request_id)
                .where(AccessRequest.state == "active")
            )
            for grant, req in active:
                out.append(("expire", req.id, grant.expires_at))
            for req in s.exec(select(AccessRequest).where(AccessRequest.state == "approved")):
                # Issuing takes well under a second; this long means the process died mid-way.
                out.append(("interrupted", req.id, req.updated_at + ISSUE_INTERRUPTED_AFTER))
        return out

    def sweep(self) -> dict[str, int]:
        """Act on every overdue deadline no timer handled (after a restart, say)."""
        now = self.clock()
        done = {"expired": 0, "timed_out": 0, "interrupted": 0, "failed": 0}
        for kind, request_id, when in self.deadlines():
            if when > now:
                continue
            try:
                if self.run_deadline(kind, request_id):
                    done[DONE_KEYS[kind]] += 1
            except Exception:
                done["failed"] += 1
                log.exception("sweep could not handle %s of request %s", kind, request_id)
        return done

    def run_deadline(self, kind: str, request_id: int) -> bool:
        """Act on one deadline (entry point for timers and the sweep); True if it acted."""
        try:
            if kind == "expire":
                return self.expire(request_id)
            if kind == "timeout":
                return self.time_out(request_id)
            if kind == "interrupted":
                return self._fail_issue(
                    request_id,
                    "interrupted: the bot stopped while issuing; anything Vault had issued "
                    "ends at its own TTL",
                )
        except Refused as exc:
            log.info("%s of request %s: %s", kind, request_id, exc)
        return False

    # ---- helpers ----------------------------------------------------------------------

    def _get(self, session: Session, request_id: int) -> AccessRequest:
        req = session.get(AccessRequest, request_id)
        if req is None:
            raise NotFound(f"there is no request #{request_id}")
        return req

    @staticmethod
    def _safe(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("notification %s failed", getattr(fn, "__name__", fn))
