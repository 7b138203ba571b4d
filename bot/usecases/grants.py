"""Use cases of access itself: issue the credential, deliver it, reveal it, end it.

Intent first: the child token's accessor is stored before any credential is read with it,
an end is recorded (state `ending`) before Vault is asked, and what Vault or Slack could not
do now is retried until it is done.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, select

from bot.domain.activity import Activity
from bot.domain.durations import format_duration
from bot.domain.notices import Notice, NoticeKind
from bot.domain.redaction import mask
from bot.domain.workflow import Event, Refused, State, check_revoker
from bot.store import AccessRequest, Grant, OutboxEntry
from bot.usecases.activity import ActivityReader
from bot.usecases.batch import Combined
from bot.usecases.core import SYSTEM, Core
from bot.usecases.effects import Later
from bot.usecases.ports import Courier, utcnow
from bot.usecases.reviews import Reviews
from bot.usecases.stats import VAULT_ERRORS
from bot.usecases.vault_audit import vault_hmacs
from providers import (
    GrantSpec,
    IssuedCredential,
    ProviderError,
    WrapTokenInvalid,
    make_provider,
)

log = logging.getLogger(__name__)

REVOKE_BACKOFF_CAP = timedelta(seconds=30)
REVOKE_THREADS = 16
# A revocation still pending this long is an alert in the security channel, once.
REVOCATION_STUCK_AFTER = timedelta(minutes=5)
# A reveal claimed this long ago and never finished (the bot died mid-way) may be tried again.
REVEAL_CLAIM_STALE = timedelta(minutes=2)
TAMPER_REASON = "wrapping token already unwrapped"
REISSUING = (
    "this credential could not be shown to you, so it was revoked; a fresh one is on its way "
    "to your messages"
)
# A credential not delivered this long after issue (the bot died in between) goes out anew.
DELIVERY_CHECK_AFTER = timedelta(minutes=1)


class Grants:
    def __init__(self, core: Core, courier: Courier | None = None, reviews: Reviews | None = None):
        self.core = core
        self.courier = courier
        # An end that owes a review owes it in the transaction that records the end.
        self.reviews = reviews or Reviews(core)
        self._expiring = Combined(self.expire_many)
        # Revocations that come due together go to Vault together.
        self._pool = ThreadPoolExecutor(REVOKE_THREADS, "revoke")
        # What each ending grant's database user ran, read before Vault drops it.
        self.activity = ActivityReader(core)

    # ---- issue and deliver ----------------------------------------------------------------

    def _spec(self, req: AccessRequest, duration: timedelta) -> tuple[Any, GrantSpec]:
        policy = self.core.policy
        res = policy.resources.get(req.resource)
        if res is None:  # removed by a policy reload since it was asked for
            raise Refused(f"{req.resource} is no longer in the policy")
        provider = make_provider(res.provider, self.core.backend, res.options)
        spec = GrantSpec(
            request_id=req.id,
            resource=req.resource,
            requester=req.requester,
            duration=duration,
            wrap_ttl=policy.wrap_ttl,
            options=res.options,
        )
        return provider, spec

    def issue(self, request_id: int) -> None:
        """Issue and deliver the credential of an approved request."""
        core = self.core
        with core.store.read() as s:
            req = core.get(s, request_id)
        # Our clock starts the grant just before Vault's TTL does: the bot revokes first and
        # Vault's own expiry stays the backstop.
        started = now(core)
        try:
            provider, spec = self._spec(req, timedelta(seconds=req.duration_seconds))
            child = provider.begin(spec)
        except Exception as exc:
            self.fail_issue(request_id, _why(exc, request_id))
            return
        # Intent first: the accessor is stored before any credential exists, so whatever
        # happens next (a crash included), recovery can revoke everything this grant made.
        lifetime = min(spec.duration, child.expires_at - child.issued_at)
        with core.store.transaction() as s:
            req = core.lock(s, request_id)
            # Failed meanwhile (the sweep took us for dead): what Vault made is owed an end.
            owed = req.state != State.APPROVED
            grant = Grant(
                request_id=request_id,
                provider=provider.name,
                token_accessor=child.accessor,
                issued_at=started,
                expires_at=started + lifetime,
            )
            s.add(grant)
            if owed:
                s.flush()
                _owe(s, [grant], "failed", SYSTEM, "the request failed while issuing", now(core))
        if owed:
            self.try_revoke(request_id)
            return
        try:
            issued = provider.issue(spec, child)
        except Exception as exc:
            self.fail_issue(request_id, _why(exc, request_id))
            return
        hmacs = vault_hmacs(core.backend, core.policy.audit.vault_device, issued)
        lifetime = min(spec.duration, issued.expires_at - issued.issued_at)
        capped = lifetime < spec.duration
        note = (
            f"Vault allowed only {format_duration(lifetime)} of the "
            f"{format_duration(spec.duration)} asked (a max_ttl or the bot token's own TTL)"
            if capped
            else ""
        )
        try:
            with core.store.transaction() as s:
                req = core.lock(s, request_id)
                grant = self._grant_of(s, request_id)
                _credential_into(s, grant, issued, started + lifetime, hmacs)
                core.move(
                    s,
                    req,
                    Event.ISSUED,
                    SYSTEM,
                    {
                        "provider": grant.provider,
                        "identity": issued.identity,
                        "lease_id": issued.lease_id,
                        "token_accessor": issued.token_accessor,
                        "expires_at": (started + lifetime).isoformat(),
                        **hmacs,
                        **(
                            {"capped_by_vault_seconds": int(lifetime.total_seconds())}
                            if capped
                            else {}
                        ),
                    },
                    note=note,
                )
                # Owed now, due later: if the bot dies before the DM, the credential is
                # still redelivered (a no-op once it arrived).
                core.effects.redeliver(s, request_id, after=DELIVERY_CHECK_AFTER)
        except Refused:
            # Failed meanwhile: what was just issued is owed a revocation.
            self._owe_revocation(request_id, "failed")
            self.try_revoke(request_id)
            return
        core.timers.at("expire", request_id, started + lifetime)
        self.deliver(request_id, issued.wrapping_token)
        self.activity.remember(request_id)  # after the delivery: it never delays it

    def deliver(self, request_id: int, wrapping_token: str) -> bool:
        """DM the wrapping token. If Slack does not take it, that credential is revoked and a
        fresh one issued and delivered once Slack answers (an outbox `redeliver`)."""
        core = self.core
        reason = self._deliver_once(request_id, wrapping_token)
        if reason is None:
            return True
        with core.store.transaction() as s:
            core.lock(s, request_id)
            core.record(
                s, request_id, Event.DELIVERY_FAILED, SYSTEM, {"error": reason}, note=reason
            )
            core.effects.redeliver(s, request_id)
        return False

    def redeliver(self, entry: OutboxEntry, payload: dict[str, Any]) -> None:
        """Outbox handler: the old credential revoked first, then a fresh one for the time
        left, then the DM. Any failure: Later (the next attempt starts with the revocation)."""
        core = self.core
        request_id = entry.request_id
        assert request_id is not None
        with core.store.read() as s:
            req = core.get(s, request_id)
            grant = self._grant_of(s, request_id)
        if req.state != State.ACTIVE or grant.delivered_at is not None:
            return  # ended or delivered meanwhile: nothing owed any more
        left = grant.expires_at - now(core)
        if left < timedelta(seconds=30):
            return  # not worth a credential; the grant ends on time as usual
        try:
            core.backend.revoke(grant.token_accessor, grant.lease_id)
            provider, spec = self._spec(req, left)
            child = provider.begin(spec)
        except ProviderError as exc:
            raise Later(str(exc)) from None
        with core.store.transaction() as s:
            # Locked and checked again: an end that began meanwhile must see this child.
            still_active = core.lock(s, request_id).state == State.ACTIVE
            if still_active:
                s.execute(
                    update(Grant)
                    .where(Grant.id == grant.id)
                    .values(token_accessor=child.accessor, lease_id=None, wrap_accessor=None)
                )
        if not still_active:
            core.backend.revoke(child.accessor, None)
            return
        try:
            issued = provider.issue(spec, child)
        except ProviderError as exc:
            raise Later(str(exc)) from None
        hmacs = vault_hmacs(core.backend, core.policy.audit.vault_device, issued)
        with core.store.transaction() as s:
            core.lock(s, request_id)
            fresh = self._grant_of(s, request_id)
            _credential_into(s, fresh, issued, fresh.expires_at, hmacs)
            core.record(
                s,
                request_id,
                Event.REISSUED,
                SYSTEM,
                {"identity": issued.identity, "token_accessor": issued.token_accessor, **hmacs},
            )
        reason = self._deliver_once(request_id, issued.wrapping_token)
        if reason is not None:
            raise Later(reason)
        self.activity.remember(request_id)

    def _deliver_once(self, request_id: int, wrapping_token: str) -> str | None:
        """One DM of the wrapping token, recorded as delivered; Slack's reason if it failed."""
        core = self.core
        try:
            if self.courier is None:
                raise RuntimeError("no courier")
            channel, ts = self.courier.deliver(core.card(request_id), wrapping_token)
        except Exception as exc:
            reason = _slack_reason(exc)
            log.warning("could not deliver the credential of request %s: %s", request_id, reason)
            return reason
        with core.store.transaction() as s:
            core.lock(s, request_id)
            grant = self._grant_of(s, request_id)
            s.execute(
                update(Grant)
                .where(Grant.id == grant.id)
                .values(dm_channel=channel, dm_ts=ts, delivered_at=now(core))
            )
            core.record(s, request_id, Event.DELIVERED, SYSTEM, {"identity": grant.identity})
        log.info("delivered the credential of request %s", request_id)
        return None

    def fail_issue(self, request_id: int, reason: str) -> bool:
        """End an approved request that got no credential; revoke whatever Vault made."""
        core = self.core
        try:
            with core.store.transaction() as s:
                req = core.lock(s, request_id)
                core.move(s, req, Event.ISSUE_FAILED, SYSTEM, {"error": reason}, note=reason)
                grant = s.exec(select(Grant).where(Grant.request_id == request_id)).first()
                if grant is not None and grant.ended_at is None:
                    _owe(s, [grant], "failed", SYSTEM, reason, now(core))
                core.effects.dm(
                    s,
                    request_id,
                    req.requester,
                    Notice(NoticeKind.ISSUE_FAILED, request_id, {"reason": reason}),
                )
        except Refused:
            return False
        if grant is not None:
            self.try_revoke(request_id)
        return True

    # ---- reveal -------------------------------------------------------------------------

    def check_reveal(self, request_id: int, actor: str) -> None:
        """Refuse early (before a modal opens) what needs no Vault to refuse."""
        with self.core.store.read() as s:
            req = self.core.get(s, request_id)
            grant = s.exec(select(Grant).where(Grant.request_id == request_id)).first()
        _check_reveal(req, grant, actor, now(self.core))

    def reveal(self, request_id: int, actor: str, wrapping_token: str) -> dict[str, Any]:
        """Unwrap the requester's credential for the reveal modal; `shown` records it once
        the modal shows it, `lost` when it could not. Single use: the token is claimed in the
        database first, so a second click or a redelivered request is "already revealed",
        never a tamper alert; and a token our own interrupted attempt spent is replaced, not
        taken for someone else's doing."""
        core = self.core
        at = now(core)
        with core.store.transaction() as s:
            req = core.lock(s, request_id)
            grant = s.exec(select(Grant).where(Grant.request_id == request_id)).first()
            _check_reveal(req, grant, actor, at)
            assert grant is not None
            ours_before = grant.reveal_claimed_at is not None  # an attempt of ours was cut off
            s.execute(update(Grant).where(Grant.id == grant.id).values(reveal_claimed_at=at))
        try:
            return core.backend.unwrap(wrapping_token)
        except WrapTokenInvalid:
            if grant.wrap_expires_at and at >= grant.wrap_expires_at:
                raise Refused(
                    "the credential's wrapping token has expired unused; "
                    "revoke this access and ask again"
                ) from None
            # Vault revokes a used wrapping token a moment after the unwrap: let it settle.
            state = self._wrap_state(grant.wrap_accessor, settle=True)
            if state == "live":
                # The token in this message is not this grant's: nothing of ours was spent.
                self._release_claim(grant.id)
                raise Refused("this message's token does not belong to this access") from None
            if ours_before:
                self.lost(request_id, "an earlier Reveal was interrupted after Vault unwrapped it")
                raise Refused(REISSUING) from None
            self._tamper(request_id, actor)
            raise Refused(
                "this credential had already been unwrapped by someone before you clicked "
                "Reveal. Security has been alerted and the access revoked; ask again."
            ) from None
        except ProviderError as exc:
            # Vault may have unwrapped it before the answer was lost (and a lookup right after
            # can still say "live"). Keep the claim, marked interrupted: the person may try
            # again at once, and if the token turns out spent, it was ours, not a tamperer's.
            self._interrupt_claim(grant.id)
            raise Refused(f"{exc}; try Reveal again in a minute") from None

    def shown(self, request_id: int, actor: str) -> None:
        """The reveal modal shows the credential: now it counts as revealed."""
        core = self.core
        with core.store.transaction() as s:
            core.lock(s, request_id)
            grant = self._grant_of(s, request_id)
            s.execute(update(Grant).where(Grant.id == grant.id).values(revealed_at=now(core)))
            core.record(s, request_id, Event.REVEALED, actor, {"identity": grant.identity})
        log.info("request %s: credential revealed to its requester", request_id)

    def lost(self, request_id: int, why: str) -> None:
        """The unwrapped credential never reached the requester's eyes: it is revoked and a
        fresh one delivered (the outbox's redelivery), and the requester is told."""
        core = self.core
        with core.store.transaction() as s:
            req = core.lock(s, request_id)
            grant = self._grant_of(s, request_id)
            s.execute(
                update(Grant)
                .where(Grant.id == grant.id)
                .values(reveal_claimed_at=None, revealed_at=None, delivered_at=None)
            )
            core.record(s, request_id, Event.DELIVERY_FAILED, SYSTEM, {"error": why}, note=why)
            core.effects.dm(
                s,
                request_id,
                req.requester,
                Notice(NoticeKind.CREDENTIAL_REISSUED, request_id, {"resource": req.resource}),
            )
            core.effects.redeliver(s, request_id)
        log.warning(
            "request %s: credential lost before it was shown (%s); reissuing", request_id, why
        )

    def _wrap_state(self, wrap_accessor: str | None, *, settle: bool = False) -> str:
        if not wrap_accessor:
            return "gone"
        for _ in range(6 if settle else 1):
            try:
                state = self.core.backend.wrap_state(wrap_accessor)
            except ProviderError:
                return "unknown"
            if state != "live" or not settle:
                return state
            time.sleep(0.2)
        return "live"

    def _interrupt_claim(self, grant_id: int | None) -> None:
        """A claim whose attempt was cut off: stale at once (a new attempt may start), yet
        set (so the next attempt knows a spent token was spent by us)."""
        with self.core.store.transaction() as s:
            s.execute(
                update(Grant)
                .where(Grant.id == grant_id)
                .values(reveal_claimed_at=now(self.core) - REVEAL_CLAIM_STALE)
            )

    def _release_claim(self, grant_id: int | None) -> None:
        with self.core.store.transaction() as s:
            s.execute(update(Grant).where(Grant.id == grant_id).values(reveal_claimed_at=None))

    def _tamper(self, request_id: int, actor: str) -> None:
        core = self.core
        try:
            with core.store.transaction() as s:
                req = core.lock(s, request_id)
                core.record(
                    s,
                    request_id,
                    Event.REVEAL_TAMPER,
                    actor,
                    {
                        "reason": TAMPER_REASON,
                        "alerted": [core.policy.security_channel],
                        "response": "access revoked",
                    },
                )
                core.effects.alert(s, request_id, Notice(NoticeKind.TAMPER, request_id))
                self._begin_end(s, req, Event.REVOKED, SYSTEM, TAMPER_REASON)
        except Refused:
            return
        core.timers.cancel("expire", request_id)
        self.try_revoke(request_id)

    # ---- ending -----------------------------------------------------------------------

    def revoke(self, request_id: int, actor: str, reason: str = "revoked early") -> bool:
        """End an active access now. True when Vault confirmed; False when the revocation is
        recorded and pending (Vault unreachable): it is retried until Vault confirms."""
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
        """End an active grant whose time is up. False when there was nothing to do. Timers
        that fire together are served together (`expire_many`)."""
        return self._expiring.submit(request_id)

    def expire_many(self, request_ids: list[int]) -> set[int]:
        """End, as one batch, the active grants among these whose time is up: one transaction
        records them all as ending, Vault revokes them in parallel, one transaction records
        what Vault confirmed. The ids that ended."""
        core = self.core
        at = now(core)
        with core.store.transaction() as s:
            rows = s.exec(
                select(AccessRequest, Grant)
                .join(Grant, Grant.request_id == AccessRequest.id)  # type: ignore[arg-type]
                .where(
                    AccessRequest.id.in_(request_ids),  # type: ignore[union-attr]
                    AccessRequest.state == State.ACTIVE.value,
                    Grant.expires_at <= at,
                )
                .order_by(AccessRequest.id)  # one lock order, however many
                .with_for_update(of=AccessRequest)
            ).all()
            why = {"end": Event.EXPIRED.value, "reason": "expired"}
            reqs = [r for r, _ in rows]
            moved = core.move_many(
                s, reqs, Event.ENDING, SYSTEM, {r.id: why for r in reqs}, thread=False
            )
            ending = {r.id for r in moved}
            grants = [g for r, g in rows if r.id in ending]
            _owe(s, grants, Event.EXPIRED.value, SYSTEM, "expired", at)
        for grant in grants:
            core.timers.cancel("expire", grant.request_id)
        return self._revoke(grants)

    def end(
        self, request_id: int, event: Event, actor: str, reason: str, *, due_only: bool = False
    ) -> bool:
        """Record the end as owed (state `ending`), then try it at once. With `due_only`,
        only a grant whose time is up (Refused otherwise)."""
        core = self.core
        with core.store.transaction() as s:
            req = core.lock(s, request_id)
            grant = self._begin_end(s, req, event, actor, reason, due_only=due_only)
        core.timers.cancel("expire", request_id)
        return self.try_revoke(request_id, grant)

    def _begin_end(
        self,
        s: Session,
        req: AccessRequest,
        event: Event,
        actor: str,
        reason: str,
        *,
        due_only: bool = False,
    ) -> Grant:
        if req.state == State.ENDING:
            raise Refused("this access is already being revoked; it ends as soon as Vault confirms")
        if req.state != State.ACTIVE:
            raise Refused(f"this request is {req.state}; there is nothing to revoke")
        grant = self._grant_of(s, req.id)
        if due_only and grant.expires_at > now(self.core):
            raise Refused("not due yet")
        # Audited, but not posted: Slack hears when it is done, or when Vault does not answer
        # (a revocation normally takes milliseconds; a reply for each half is noise).
        self.core.move(
            s,
            req,
            Event.ENDING,
            actor,
            {"end": event.value, "reason": reason, **_override(reason)},
            thread=False,
        )
        _owe(s, [grant], event.value, actor, reason, now(self.core))
        return grant

    def _owe_revocation(self, request_id: int, why: str) -> None:
        with self.core.store.transaction() as s:
            grant = self._grant_of(s, request_id)
            if grant.ended_at is None:
                _owe(s, [grant], why, SYSTEM, why, now(self.core))

    def try_revoke(self, request_id: int, grant: Grant | None = None) -> bool:
        """One attempt at an owed revocation (entry point for the timer and the sweep too;
        `grant` as just read by the caller, if it has it)."""
        if grant is None:
            with self.core.store.read() as s:
                grant = s.exec(select(Grant).where(Grant.request_id == request_id)).first()
        if grant is None:
            return False
        return request_id in self._revoke([grant])

    def _revoke(self, grants: list[Grant]) -> set[int]:
        """One attempt at each owed revocation, in parallel. Vault first; the state says
        "ended" only once Vault confirmed. On failure: backoff capped at 30 s, one thread
        notice when it starts failing, one alert when it is stuck. The ids that ended."""
        owed = [g for g in grants if g.ended_at is None and g.revoke_next_at is not None]
        readings = self.activity.read(owed)  # time-boxed; recorded only with a confirmed end
        if len(owed) > 1:
            errors = list(self._pool.map(self._revoke_in_vault, owed))
        else:
            errors = [self._revoke_in_vault(g) for g in owed]
        ended, swapped = self._confirm(
            [g for g, error in zip(owed, errors, strict=True) if error is None],
            now(self.core),
            readings,
        )
        for grant, error in zip(owed, errors, strict=True):
            if error is not None:
                self._revoke_failed(grant.request_id, error)
        # A redelivery swapped the credential while we revoked the old one: again.
        return ended | {rid for rid in swapped if self.try_revoke(rid)}

    def _revoke_in_vault(self, grant: Grant) -> str | None:
        """None once Vault confirmed, else why not."""
        try:
            # Every provider issues through a per-grant child token, so ending a grant is the
            # same for all and needs nothing from the policy (the resource may be gone since).
            self.core.backend.revoke(grant.token_accessor, grant.lease_id)
        except ProviderError as exc:
            VAULT_ERRORS.labels("revoke").inc()
            return str(exc)
        return None

    def _confirm(
        self, revoked: list[Grant], at: datetime, readings: dict[int, Activity] | None = None
    ) -> tuple[set[int], list[int]]:
        """Vault confirmed these revocations: each grant ended, and its request with it if
        it was ending; the activity read before (`readings`) is recorded with the end. The ids
        that ended, and those whose credential was swapped meanwhile."""
        if not revoked:
            return set(), []
        core = self.core
        asked = {g.request_id: g.token_accessor for g in revoked}
        with core.store.transaction() as s:
            rows = s.exec(
                select(AccessRequest, Grant)
                .join(Grant, Grant.request_id == AccessRequest.id)  # type: ignore[arg-type]
                .where(AccessRequest.id.in_(list(asked)))  # type: ignore[union-attr]
                .order_by(AccessRequest.id)
                .with_for_update(of=AccessRequest)
            ).all()
            # Another replica (or the timer and the sweep) may have got there first.
            open_rows = [(r, g) for r, g in rows if g.ended_at is None]
            swapped = [r.id for r, g in open_rows if g.token_accessor != asked[r.id]]
            done = [(r, g) for r, g in open_rows if g.token_accessor == asked[r.id]]
            if done:
                s.execute(
                    update(Grant)
                    .where(Grant.id.in_([g.id for _, g in done]))  # type: ignore[union-attr]
                    .values(ended_at=at, revoke_next_at=None, revoke_error=None)
                )
            for req, _ in done:
                if req.state != State.ENDING:
                    log.info("request %s (%s): its credential is revoked", req.id, req.state)
            self.activity.record(s, done, readings or {})
            self._ended(s, [(r, g) for r, g in done if r.state == State.ENDING])
        return {r.id for r, _ in done}, swapped

    def _ended(self, s: Session, ending: list[tuple[AccessRequest, Grant]]) -> None:
        """The requests whose end Vault confirmed: revoked or expired, as recorded; and the
        reviews their ends owe."""
        core = self.core
        ended: list[AccessRequest] = []
        groups: dict[tuple[Event, str], list[tuple[AccessRequest, Grant]]] = {}
        for req, grant in ending:
            how = Event(grant.end_reason or Event.REVOKED.value)
            groups.setdefault((how, grant.ended_by or SYSTEM), []).append((req, grant))
        for (event, actor), group in groups.items():
            ended += core.move_many(
                s,
                [r for r, _ in group],
                event,
                actor,
                {r.id: _ended_details(g) for r, g in group},
                note={r.id: "" if event == Event.EXPIRED else g.end_note or "" for r, g in group},
            )
            for req, grant in group:
                core.effects.dm(
                    s,
                    req.id,
                    req.requester,
                    Notice(
                        NoticeKind.ACCESS_ENDED,
                        req.id,
                        {"resource": req.resource, "how": event.value, "by": grant.ended_by},
                    ),
                )
                log.info("request %s: %s; Vault confirmed the revocation", req.id, event.value)
        self.reviews.owe(s, ended)

    def _revoke_failed(self, request_id: int, error: str) -> None:
        core = self.core
        at = utcnow()  # when to try Vault again is wall-clock time
        with core.store.transaction() as s:
            req = core.lock(s, request_id)
            grant = self._grant_of(s, request_id)
            if grant.ended_at is not None:
                return
            delay = min(REVOKE_BACKOFF_CAP, timedelta(seconds=2 ** min(grant.revoke_attempts, 6)))
            first_failure = grant.revoke_failing_since is None
            since = grant.revoke_failing_since or at
            stuck = at - since >= REVOCATION_STUCK_AFTER and not grant.revoke_alerted
            s.execute(
                update(Grant)
                .where(Grant.id == grant.id)
                .values(
                    revoke_attempts=grant.revoke_attempts + 1,
                    revoke_next_at=at + delay,
                    revoke_failing_since=since,
                    revoke_error=mask(error)[:300],
                    revoke_alerted=grant.revoke_alerted or stuck,
                )
            )
            if first_failure:  # one notice when it starts failing
                core.record(
                    s, request_id, Event.REVOKE_FAILED, SYSTEM, {"error": error}, note=error
                )
            if stuck:
                core.record(
                    s,
                    request_id,
                    Event.REVOCATION_STUCK,
                    SYSTEM,
                    {
                        "error": error,
                        "since": since.isoformat(),
                        "alerted": [core.policy.security_channel],
                    },
                    thread=False,
                )
                core.effects.alert(
                    s,
                    request_id,
                    Notice(
                        NoticeKind.REVOCATION_STUCK,
                        request_id,
                        {"since": since.isoformat(), "error": error},
                    ),
                )
        log.warning(
            "request %s (%s): revocation pending, retrying in %s s: %s",
            request_id,
            req.state,
            int(delay.total_seconds()),
            error,
        )
        core.timers.at("revocation", request_id, at + delay)

    @staticmethod
    def _grant_of(s: Session, request_id: int) -> Grant:
        grant = s.exec(select(Grant).where(Grant.request_id == request_id)).first()
        if grant is None:
            raise Refused(f"request #{request_id} has no credential")
        return grant


def now(core: Core) -> datetime:
    return core.clock()


def _check_reveal(req: AccessRequest, grant: Grant | None, actor: str, at: datetime) -> None:
    if actor != req.requester:
        raise Refused("only the requester can reveal this credential")
    if req.state != State.ACTIVE or grant is None:
        raise Refused(f"this access is {req.state}; the credential no longer works")
    claimed = grant.reveal_claimed_at
    if grant.revealed_at is not None or (claimed and at - claimed < REVEAL_CLAIM_STALE):
        raise Refused(
            "this credential was already revealed once (it is single-use); "
            "if you lost it, revoke this access and ask again"
        )


def _credential_into(
    s: Session,
    grant: Grant,
    issued: IssuedCredential,
    expires: datetime,
    hmacs: dict[str, Any] | None = None,
) -> None:
    hmacs = hmacs or {}
    s.execute(
        update(Grant)
        .where(Grant.id == grant.id)
        .values(
            identity=issued.identity,
            token_accessor=issued.token_accessor,
            lease_id=issued.lease_id,
            wrap_accessor=issued.wrap_accessor,
            wrap_expires_at=issued.wrap_expires_at,
            expires_at=expires,
            accessor_hmac=hmacs.get("accessor_hmac"),
            lease_hmac=hmacs.get("lease_hmac"),
            db_user_oid=None,  # a new user: `ActivityReader.remember` looks its oid up
        )
    )
    s.refresh(grant)


def _owe(s: Session, grants: list[Grant], end: str, actor: str, note: str, at: datetime) -> None:
    if grants:
        s.execute(
            update(Grant)
            .where(Grant.id.in_([g.id for g in grants]))  # type: ignore[union-attr]
            .values(end_reason=end, ended_by=actor, end_note=mask(note), revoke_next_at=at)
        )


def _ended_details(grant: Grant) -> dict[str, Any]:
    details: dict[str, Any] = {
        "reason": grant.end_note,
        "identity": grant.identity,
        "attempts": grant.revoke_attempts + 1,
    }
    if grant.revoke_failing_since:
        details["pending_since"] = grant.revoke_failing_since.isoformat()
    return {**details, **_override(grant.end_note)}


def _override(reason: str | None) -> dict[str, Any]:
    """An end the system forced rather than a person or the clock: named for the audit."""
    return {"override": "tamper_revoke"} if reason == TAMPER_REASON else {}


def _why(exc: Exception, request_id: int) -> str:
    if isinstance(exc, ProviderError):
        VAULT_ERRORS.labels("issue").inc()
        log.warning("issuing request %s failed: %s", request_id, exc)
        return str(exc)
    if isinstance(exc, Refused):
        log.warning("issuing request %s refused: %s", request_id, exc)
        return str(exc)
    log.error("issuing request %s failed", request_id, exc_info=exc)
    return "internal error (see the bot's log)"


def _slack_reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    code = response.get("error") if hasattr(response, "get") else None
    return f"Slack answered {code}" if code else f"Slack unreachable ({type(exc).__name__})"
