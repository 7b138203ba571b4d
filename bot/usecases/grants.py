"""Use cases of access itself: issue the credential, deliver it, reveal it, end it."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import select

from bot.domain.durations import format_duration
from bot.domain.notices import Notice, NoticeKind
from bot.domain.workflow import Event, Refused, State, check_revoker
from bot.store import AccessRequest, Grant, audit
from bot.usecases.core import SYSTEM, Core
from providers import GrantSpec, ProviderError, WrapTokenInvalid, make_provider

log = logging.getLogger(__name__)


class Grants:
    def __init__(self, core: Core):
        self.core = core

    # ---- issue and deliver ----------------------------------------------------------------

    def issue(self, request_id: int) -> None:
        core = self.core
        with core.store.read() as s:
            req = core.get(s, request_id)
        res = core.policy.resources[req.resource]
        spec = GrantSpec(
            request_id=request_id,
            resource=req.resource,
            requester=req.requester,
            duration=timedelta(seconds=req.duration_seconds),
            wrap_ttl=core.policy.wrap_ttl,
            options=res.options,
        )
        # Our clock starts the grant just before Vault's TTL does: the bot revokes first and
        # Vault's own expiry stays the backstop.
        issued_at = core.clock()
        try:
            provider = make_provider(res.provider, core.backend, res.options)
            issued = provider.issue(spec)
        except Exception as exc:
            if isinstance(exc, ProviderError):
                reason = str(exc)
                log.warning("issuing request %s failed: %s", request_id, reason)
            else:  # a bug of ours: never leave the request stuck in "approved"
                reason = "internal error (see the bot's log)"
                log.exception("issuing request %s failed", request_id)
            self.fail_issue(request_id, reason)
            return
        # The grant ends when Vault ends it: never promise more than Vault gave.
        lifetime = min(spec.duration, issued.expires_at - issued.issued_at)
        capped = lifetime < spec.duration
        try:
            with core.store.transaction() as s:
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
                core.move(
                    s,
                    core.get(s, request_id),
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
            core.backend.revoke(issued.token_accessor, issued.lease_id)
            raise
        core.timers.at("expire", request_id, grant.expires_at)
        note = (
            f"Vault allowed only {format_duration(lifetime)} of the "
            f"{format_duration(spec.duration)} asked (a max_ttl or the bot token's own TTL)"
            if capped
            else ""
        )
        card = core.after(request_id, Event.ISSUED, SYSTEM, note)
        try:
            where = core.notifier.deliver(card, issued.wrapping_token)
        except Exception:
            # The token is lost with the message; the requester can revoke and ask again.
            log.exception("could not deliver the credential of request %s", request_id)
            return
        if where:
            with core.store.transaction() as s:
                s.execute(
                    update(Grant)
                    .where(Grant.id == grant.id)
                    .values(dm_channel=where[0], dm_ts=where[1])
                )

    def fail_issue(self, request_id: int, reason: str) -> bool:
        core = self.core
        try:
            with core.store.transaction() as s:
                req = core.get(s, request_id)
                core.move(s, req, Event.ISSUE_FAILED, SYSTEM, {"error": reason})
        except Refused:
            return False
        core.after(request_id, Event.ISSUE_FAILED, SYSTEM, reason)
        core.safe(
            core.notifier.tell,
            req.requester,
            Notice(NoticeKind.ISSUE_FAILED, request_id, {"reason": reason}),
        )
        return True

    # ---- reveal -------------------------------------------------------------------------

    def reveal(self, request_id: int, actor: str, wrapping_token: str) -> dict[str, Any]:
        """Unwrap the requester's credential for the reveal modal. Single use."""
        core = self.core
        now = core.clock()
        with core.store.read() as s:
            req = core.get(s, request_id)
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
            payload = core.backend.unwrap(wrapping_token)
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
        with core.store.transaction() as s:
            s.execute(update(Grant).where(Grant.id == grant.id).values(revealed_at=now))
            audit.append(
                s,
                at=now,
                actor=actor,
                action=Event.REVEALED,
                request_id=request_id,
                details={"identity": grant.identity},
            )
        core.after(request_id, Event.REVEALED, actor)
        return payload

    def _tamper(self, request_id: int, actor: str) -> None:
        core = self.core
        with core.store.transaction() as s:
            audit.append(
                s,
                at=core.clock(),
                actor=actor,
                action=Event.REVEAL_TAMPER,
                request_id=request_id,
                details={"reason": "wrapping token already unwrapped"},
            )
        card = core.after(request_id, Event.REVEAL_TAMPER, actor)
        core.safe(core.notifier.alert, card, Notice(NoticeKind.TAMPER, request_id))
        try:
            self.end(request_id, Event.REVOKED, SYSTEM, "wrapping token already unwrapped")
        except Refused:
            pass

    # ---- ending -----------------------------------------------------------------------

    def revoke(self, request_id: int, actor: str, reason: str = "revoked early") -> AccessRequest:
        core = self.core
        with core.store.read() as s:
            req = core.get(s, request_id)
        check_revoker(
            actor=actor,
            requester=req.requester,
            approvers=core.policy.approver_ids(req.resource),
            state=State(req.state),
        )
        return self.end(request_id, Event.REVOKED, actor, reason)

    def expire(self, request_id: int) -> bool:
        """End an active grant whose time is up. False when there was nothing to do."""
        core = self.core
        with core.store.read() as s:
            req = core.get(s, request_id)
            grant = s.exec(select(Grant).where(Grant.request_id == request_id)).first()
        if req.state != State.ACTIVE or grant is None or grant.expires_at > core.clock():
            return False
        try:
            self.end(request_id, Event.EXPIRED, SYSTEM, "expired")
        except Refused:
            return False
        return True

    def end(self, request_id: int, event: Event, actor: str, reason: str) -> AccessRequest:
        """Revoke in Vault first, then record: the database never says "ended" while the
        credential still works. Failure to revoke is recorded and retried by the sweep."""
        core = self.core
        with core.store.read() as s:
            req = core.get(s, request_id)
            grant = s.exec(select(Grant).where(Grant.request_id == request_id)).first()
        if req.state != State.ACTIVE or grant is None:
            raise Refused(f"this request is {req.state}; there is nothing to revoke")
        try:
            # Every provider issues through a per-grant child token, so ending a grant is the
            # same for all and needs nothing from the policy (the resource may be gone since).
            core.backend.revoke(grant.token_accessor, grant.lease_id)
        except ProviderError as exc:
            with core.store.transaction() as s:
                audit.append(
                    s,
                    at=core.clock(),
                    actor=actor,
                    action=Event.REVOKE_FAILED,
                    request_id=request_id,
                    details={"error": str(exc)},
                )
            core.after(request_id, Event.REVOKE_FAILED, actor, str(exc))
            raise Refused(
                f"Vault could not revoke it ({exc}); it will be retried, and Vault ends it by "
                "itself at the lease's expiry"
            ) from None
        now = core.clock()
        with core.store.transaction() as s:
            req = core.get(s, request_id)
            core.move(s, req, event, actor, {"reason": reason, "identity": grant.identity})
            s.execute(
                update(Grant)
                .where(Grant.id == grant.id)
                .values(ended_at=now, ended_by=actor, end_reason=event.value)
            )
        core.timers.cancel("expire", request_id)
        core.after(request_id, event, actor, "" if event == Event.EXPIRED else reason)
        core.safe(
            core.notifier.tell,
            req.requester,
            Notice(
                NoticeKind.ACCESS_ENDED,
                request_id,
                {"resource": req.resource, "how": event.value, "by": actor},
            ),
        )
        return req
