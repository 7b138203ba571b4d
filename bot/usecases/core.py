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
from bot.policy import Policy, PolicyHolder, Resource
from bot.store import AccessRequest, AuditEvent, Decision, Grant, Review, Store, audit, outbox
from bot.usecases.effects import Effects
from bot.usecases.ports import Card, Clock, NoTimers, Timers, utcnow
from providers import ProviderError, VaultBackend
from providers.transit import Sealer

log = logging.getLogger(__name__)

SYSTEM = "breakglass"  # the actor of timer-driven events
CREDENTIAL_MESSAGE_EVENTS = frozenset({Event.REVEALED, Event.ENDING, Event.REVOKED, Event.EXPIRED})


class NotFound(Refused):
    """No such request."""


@dataclass
class Core:
    """The ports and the policy; one per process, shared by the use cases."""

    store: Store
    # The policy in force (`policy`), replaced whole on a reload.
    policies: PolicyHolder
    backend: VaultBackend
    effects: Effects
    timers: Timers = field(default_factory=NoTimers)
    clock: Clock = utcnow
    # Free text at rest: sealed with Vault's transit key (audit.encrypt), or as typed.
    sealer: Sealer = field(default_factory=lambda: Sealer(None))
    # Called once a transaction that wrote audit events committed (the forwarders' wake).
    on_audit: Callable[[], None] | None = None

    @property
    def policy(self) -> Policy:
        """The policy in force now (a reload may replace it: take it once per piece of work)."""
        return self.policies.current

    def seal(self, text: str | None, what: str) -> str | None:
        """`text` as stored: sealed when audit.encrypt is set. When Vault cannot seal it now
        (unreachable, the key missing), Refused before anything is recorded, so that the
        person who typed it hears that `what` was not recorded and why, rather than an
        internal error."""
        try:
            return self.sealer.seal(text)
        except ProviderError as exc:
            log.error("cannot seal free text with %s: %s", self.sealer.path, exc)
            raise Refused(
                f"{what} was not recorded: the bot could not encrypt it with Vault ({exc}). "
                "Nothing changed; try again in a minute, or ask in the security channel"
            ) from None

    # ---- reading ----------------------------------------------------------------------

    def get(self, session: Session, request_id: int) -> AccessRequest:
        req = session.get(AccessRequest, request_id)
        if req is None:
            raise NotFound(f"there is no request #{request_id}")
        return req

    def card(self, request_id: int, session: Session | None = None, seq: int | None = None) -> Card:
        """What messages about the request show; with `seq`, also that audit event, for the
        thread reply that reports it."""
        if session is None:
            with self.store.read() as s:
                return self.card(request_id, s, seq)
        req = self.get(session, request_id)
        decisions = session.exec(
            select(Decision).where(Decision.request_id == request_id).order_by(Decision.id)
        ).all()
        denial = next((d for d in decisions if d.outcome == "deny"), None)
        grant = session.exec(select(Grant).where(Grant.request_id == request_id)).first()
        review = session.exec(select(Review).where(Review.request_id == request_id)).first()
        # Shown opened: sealed texts are decrypted into copies, never into the stored rows.
        stored = [
            req.justification,
            req.ticket,
            denial.reason if denial else None,
            review.notes if review else None,
        ]
        opened = self.sealer.open_many(stored)
        if opened != stored:
            req = _detached(req, justification=opened[0] or "", ticket=opened[1])
            if review is not None:
                review = _detached(review, notes=opened[3])
        resource = self.policy.resources.get(req.resource)
        if resource is None:  # removed from the policy since; show what we can
            resource = Resource(provider="unknown", approvers=["-"], description="(removed)")
        return Card(
            request=req,
            resource=resource,
            approvers=sorted(self.policy.approver_ids(req.resource)),
            approvals=[d.approver for d in decisions if d.outcome == "approve"],
            denied_by=denial.approver if denial else None,
            deny_reason=opened[2],
            grant=grant,
            review=review,
            reviewers=sorted(self.policy.reviewer_ids(req.resource) - {req.requester}),
            event=None if seq is None else session.get(AuditEvent, seq),
        )

    # ---- changing -----------------------------------------------------------------------

    def lock(self, session: Session, request_id: int) -> AccessRequest:
        """The request row, locked until the transaction ends (PostgreSQL; SQLite has one
        writer anyway). Every transaction that changes a request takes this lock first, then
        the grant, then the audit head: one order, so no deadlock."""
        req = session.exec(
            select(AccessRequest).where(AccessRequest.id == request_id).with_for_update()
        ).first()
        if req is None:
            raise NotFound(f"there is no request #{request_id}")
        return req

    def move(
        self,
        session: Session,
        req: AccessRequest,
        event: Event,
        actor: str,
        details: dict[str, Any] | None = None,
        *,
        note: str = "",
        thread: bool = True,
        **values: Any,
    ) -> AccessRequest:
        """Apply one transition with its audit event, and owe the thread reply and the card
        update that report it (unless `thread` is False), all in the caller's transaction;
        only one racer can win it."""
        moved = self.move_many(
            session,
            [req],
            event,
            actor,
            {req.id: details or {}},
            note=note,
            thread=thread,
            **values,
        )
        if not moved:
            session.rollback()
            fresh = session.get(AccessRequest, req.id)
            raise Refused(
                f"this request just changed (now {fresh.state if fresh else 'gone'}); "
                "nothing changed"
            )
        return req

    def move_many(
        self,
        session: Session,
        reqs: list[AccessRequest],
        event: Event,
        actor: str,
        details: dict[int, dict[str, Any]],
        *,
        note: str | dict[int, str] = "",
        thread: bool = True,
        **values: Any,
    ) -> list[AccessRequest]:
        """`move` for requests in one state, with one UPDATE and one append to the audit
        chain: the ones that were still in that state moved (returned, in order); the rest
        changed meanwhile and are left as they are."""
        if not reqs:
            return []
        (current,) = {State(r.state) for r in reqs}
        target = transition(event, current)
        moved_ids = set(
            session.scalars(
                update(AccessRequest)
                .where(
                    AccessRequest.id.in_([r.id for r in reqs]),  # type: ignore[union-attr]
                    AccessRequest.state == current.value,
                )
                .values(state=target.value, updated_at=self.clock(), **values)
                .returning(AccessRequest.id)
            )
        )
        # The ORM UPDATE above brought the moved objects up to date (synchronize_session).
        moved = [r for r in reqs if r.id in moved_ids]
        notes = note if isinstance(note, dict) else {r.id: note for r in moved}
        self.record_many(
            session,
            [
                (
                    r.id,
                    event,
                    actor,
                    {"from": current.value, "to": target.value, **details.get(r.id, {})},
                    notes.get(r.id, ""),
                )
                for r in moved
            ],
            thread=thread,
        )
        return moved

    def record(
        self,
        session: Session,
        request_id: int | None,
        event: Event,
        actor: str,
        details: dict[str, Any] | None = None,
        *,
        note: str = "",
        thread: bool = True,
    ) -> AuditEvent:
        """One audit event; with `thread`, also the reply and the card update it is owed."""
        return self.record_many(
            session, [(request_id, event, actor, details or {}, note)], thread=thread
        )[0]

    @staticmethod
    def _with_resource(
        session: Session, request_id: int | None, details: dict[str, Any]
    ) -> dict[str, Any]:
        """Every request event names its resource, so each event reads on its own (an export
        filtered by resource, a SIEM rule). The request is in the session already."""
        if request_id is None or "resource" in details:
            return details
        req = session.get(AccessRequest, request_id)
        return {"resource": req.resource, **details} if req is not None else details

    def record_many(
        self,
        session: Session,
        entries: list[tuple[int | None, Event, str, dict[str, Any], str]],
        *,
        thread: bool = True,
    ) -> list[AuditEvent]:
        """Audit events (request id, event, actor, details, note), appended to the chain
        together; with `thread`, each also owes its reply and its card update."""
        at = self.clock()
        new = [
            audit.NewEvent(at, who, event, rid, self._with_resource(session, rid, details))
            for rid, event, who, details, _ in entries
        ]
        recorded = audit.append_many(session, new)
        _log_after_commit(session, new, recorded)
        if self.on_audit is not None:
            outbox.wake_after_commit(session, self.on_audit)
        for (request_id, event, actor, _, note), done in zip(entries, recorded, strict=True):
            if thread and request_id is not None:
                # The card first: the very first reply needs the card it hangs under.
                self.effects.card(session, request_id)
                self.effects.thread(session, request_id, done.seq, actor, note)
                if event in CREDENTIAL_MESSAGE_EVENTS:
                    self.effects.credential_changed(session, request_id)
        return recorded


# Events an operator should look at; every other event (the normal path: requested,
# approved, issued, revealed, revoked, expired, ...) is logged at INFO.
_EVENT_LEVELS = {
    Event.ISSUE_FAILED: logging.WARNING,
    Event.REVOKE_FAILED: logging.WARNING,
    Event.DELIVERY_FAILED: logging.WARNING,
    Event.REVEAL_TAMPER: logging.ERROR,
    Event.REVOCATION_STUCK: logging.ERROR,
    Event.CHAIN_BROKEN: logging.ERROR,
}


def _log_after_commit(
    session: Session, new: list[audit.NewEvent], recorded: list[AuditEvent]
) -> None:
    """One log line per audit event, once its transaction committed (a rolled-back change
    is not logged as done): the ids only (request, resource, actor), never the details."""
    pending = session.info.get("log_events")
    if pending is None:
        pending = session.info["log_events"] = []
        # First: the line that says what happened comes before the effects it owes.
        session.info.setdefault("after_commit", []).insert(0, lambda: _log_events(pending))
    for item, done in zip(new, recorded, strict=True):
        resource = (item.details or {}).get("resource")
        pending.append(
            (
                done.seq,
                item.request_id,
                str(item.action),
                item.actor,
                resource if isinstance(resource, str) else None,
            )
        )


def _log_events(events: list[tuple[int, int | None, str, str, str | None]]) -> None:
    for seq, request_id, action, actor, resource in events:
        level = _EVENT_LEVELS.get(Event(action), logging.INFO)
        on = f" ({resource})" if resource else ""
        subject = f"request {request_id}{on}" if request_id is not None else "audit"
        by = "" if actor == SYSTEM else f" by {actor}"
        ids: dict[str, Any] = {"action": action, "actor": actor, "audit_seq": seq}
        if request_id is not None:
            ids["request_id"] = request_id
        if resource:
            ids["resource"] = resource
        log.log(level, "%s: %s%s", subject, action.replace("_", " "), by, extra=ids)


def _detached(row: Any, **values: Any) -> Any:
    """A copy of `row` outside any session, with `values`: what is shown, never stored."""
    copy = type(row).model_validate(row.model_dump())
    for name, value in values.items():
        setattr(copy, name, value)
    return copy
