"""What every use case shares: its ports, reading a request's card, and the one way a state
changes (a conditional UPDATE plus exactly one audit event, in the caller's transaction)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, select

from bot.domain.workflow import Event, Refused, State, transition
from bot.policy import Policy, Resource
from bot.store import AccessRequest, AuditEvent, Decision, Grant, Store, audit
from bot.usecases.ports import Card, Clock, Notifier, NoTimers, Timers, utcnow
from providers import VaultBackend

log = logging.getLogger(__name__)

SYSTEM = "breakglass"  # the actor of timer-driven events
CREDENTIAL_MESSAGE_EVENTS = frozenset({Event.REVEALED, Event.REVOKED, Event.EXPIRED})


class NotFound(Refused):
    """No such request."""


@dataclass
class Core:
    """The ports and the policy; one per process, shared by the use cases."""

    store: Store
    policy: Policy
    backend: VaultBackend
    notifier: Notifier
    timers: Timers = field(default_factory=NoTimers)
    clock: Clock = utcnow

    # ---- reading ----------------------------------------------------------------------

    def get(self, session: Session, request_id: int) -> AccessRequest:
        req = session.get(AccessRequest, request_id)
        if req is None:
            raise NotFound(f"there is no request #{request_id}")
        return req

    def card(
        self, request_id: int, session: Session | None = None, event: Event | None = None
    ) -> Card:
        """What messages about the request show; with `event`, also the latest audit event
        of that kind, for the thread reply that reports it."""
        if session is None:
            with self.store.read() as s:
                return self.card(request_id, s, event)
        req = self.get(session, request_id)
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
            approvers=sorted(self.policy.approver_ids(req.resource)),
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

    # ---- changing -----------------------------------------------------------------------

    def move(
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

    # ---- telling ------------------------------------------------------------------------

    def after(self, request_id: int, event: Event, actor: str, note: str = "") -> Card:
        """Tell the thread and refresh the card; a Slack failure is logged, never raised."""
        card = self.card(request_id, event=event)
        try:
            self.notifier.record(card, event, actor, note)
        except Exception:
            log.exception("could not post %s for request %s to Slack", event, request_id)
        if event in CREDENTIAL_MESSAGE_EVENTS and card.grant and card.grant.dm_ts:
            # The requester's message drops the spent token and the buttons that no longer apply.
            self.safe(self.notifier.update_credential, card)
        return card

    @staticmethod
    def safe(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("notification %s failed", getattr(fn, "__name__", fn))
