"""The fault suite, Vault: an outage (a TCP proxy that refuses and cuts connections in front of
the real OpenBao) never loses a revocation, floods nobody, and is visible in /readyz."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from sqlmodel import select

from bot.domain.workflow import State
from bot.sandbox.stack import APPROVER, APPROVER_2, OUTSIDER, REQUESTER, Bot, start_bot
from bot.slack.ids import ActionId
from bot.store import AuditEvent, Grant, audit
from tests.helpers import (
    click,
    credential_dm,
    request_access,
    request_id_of,
    request_row,
    reveal,
    thread_texts,
    wait_for,
)

pytestmark = pytest.mark.faults


@pytest.fixture
def proxied(backends, slack, clock, database_url, tmp_path, vault_proxy) -> Iterator[Bot]:
    """The bot with Vault behind a proxy the test controls."""
    b = start_bot(
        backends, slack, database_url, clock=clock, workdir=tmp_path, vault_addr=vault_proxy.url
    )
    yield b
    b.stop()


def events(bot, action: str) -> list[AuditEvent]:
    with bot.runtime.store.read() as s:
        return list(s.exec(select(AuditEvent).where(AuditEvent.action == action)))


def grant_of(bot) -> Grant:
    with bot.runtime.store.read() as s:
        return s.exec(select(Grant)).one()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_revoke_now_during_an_outage_is_retried_until_vault_confirms(
    proxied, slack, backends, vault_proxy
):
    bot = proxied
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    user, password = reveal(bot, slack)
    vault_proxy.refuse()
    click(bot, REQUESTER, credential_dm(slack), ActionId.REVOKE)
    assert any("revocation pending" in t for t in slack.ephemerals(REQUESTER))
    assert request_row(bot, rid).state == State.ENDING
    assert backends.pg.can_login(user, password), "Vault was not reached: still alive"
    # Several retries go by while Vault is away: one notice, not one per attempt.
    wait_for(lambda: grant_of(bot).revoke_attempts >= 3, timeout=20)
    assert len(events(bot, "revoke_failed")) == 1
    pending = [t for t in thread_texts(slack, parent) if "Revocation pending" in t]
    assert len(pending) == 1
    assert "Vault unreachable since" in str(
        next(m for m in slack.channel_messages(parent.channel) if m.ts == parent.ts).blocks
    )
    vault_proxy.restore()
    wait_for(lambda: request_row(bot, rid).state == State.REVOKED, timeout=40)
    assert not backends.pg.can_login(user, password)
    wait_for(lambda: any("Revoked by" in t for t in thread_texts(slack, parent)))
    with bot.runtime.store.read() as s:
        assert audit.verify(s).ok


def test_an_expiry_during_an_outage_is_retried(proxied, slack, backends, clock, vault_proxy):
    bot = proxied
    parent = request_access(bot, slack, duration="15m")
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    user, password = reveal(bot, slack)
    vault_proxy.refuse()
    clock.advance(timedelta(minutes=16))
    bot.service.deadlines.sweep()
    assert request_row(bot, rid).state == State.ENDING
    vault_proxy.restore()
    wait_for(lambda: request_row(bot, rid).state == State.EXPIRED, timeout=40)
    assert not backends.pg.can_login(user, password)
    assert grant_of(bot).end_reason == "expired"


def test_a_token_vault_already_ended_counts_as_revoked(bot, slack, backends):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    # Vault's own TTL (or an operator) ended it first: gone is success, not a failure.
    backends.bao.client().auth.token.revoke_accessor(grant_of(bot).token_accessor)
    click(bot, REQUESTER, credential_dm(slack), ActionId.REVOKE)
    assert request_row(bot, rid).state == State.REVOKED
    assert events(bot, "revoke_failed") == []


def test_readyz_names_vault_when_it_is_away(proxied, vault_proxy):
    url = f"{proxied.server.url}/readyz"
    vault_proxy.refuse()
    said = wait_for(lambda: (x := requests.get(url, timeout=15)).status_code == 503 and x.json())
    assert said["ok"] is False and "reach Vault" in said["vault"], said
    assert said["database"] == "ok"
    assert requests.get(f"{proxied.server.url}/healthz", timeout=5).status_code == 200
    vault_proxy.restore()
    wait_for(lambda: requests.get(url, timeout=15).status_code == 200, timeout=20)


def test_readyz_names_slack_when_the_token_is_refused(bot, slack):
    slack.fail("auth.test", error="invalid_auth", times=None)
    r = requests.get(f"{bot.server.url}/readyz", timeout=15)
    assert r.status_code == 503 and "invalid_auth" in r.json()["slack"], r.json()


def test_a_revocation_pending_past_the_threshold_alerts_security_once(proxied, slack, vault_proxy):
    bot = proxied
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    vault_proxy.refuse()
    assert bot.service.grants.revoke(rid, REQUESTER) is False
    # Vault has been away for six minutes now.
    with bot.runtime.store.transaction() as s:
        grant = s.exec(select(Grant)).one()
        grant.revoke_failing_since -= timedelta(minutes=6)
        s.add(grant)
    bot.service.grants.try_revoke(rid)
    bot.service.grants.try_revoke(rid)
    alerts = [
        c for c in slack.calls_to("chat.postMessage") if "Revocation pending since" in c.dump()
    ]
    assert len(alerts) == 1 and "<!here>" in alerts[0].args["text"]
    assert len(events(bot, "revocation_stuck")) == 1
    vault_proxy.restore()
    wait_for(lambda: request_row(bot, rid).state == State.REVOKED, timeout=40)


def test_a_bot_token_that_can_be_neither_renewed_nor_replaced_is_an_alert(bot, slack, backends):
    from bot.sandbox.openbao import bot_token

    # The bot runs on a token of its own (the session's is shared by every test)...
    token = bot_token(backends.bao.client(), ttl="1h")
    bot.runtime.backend.auth.client.token = token
    scheduler = bot.runtime.scheduler
    scheduler.maintain_auth()
    # ...which someone revokes: a static token cannot be replaced.
    backends.bao.client().auth.token.revoke(token)
    scheduler.maintain_auth()
    scheduler.maintain_auth()
    alerts = [c for c in slack.calls_to("chat.postMessage") if "neither renewed nor" in c.dump()]
    assert len(alerts) == 1, "one alert per episode, not one per check"
    assert alerts[0].args["channel"] == "C0SECURITY" and "<!here>" in alerts[0].args["text"]
    r = requests.get(f"{bot.server.url}/readyz", timeout=15)
    assert r.status_code == 503 and "not valid" in r.json()["vault"], r.json()


def test_a_token_our_own_interrupted_reveal_spent_is_replaced_not_a_tamper_alert(
    bot, slack, backends
):
    from bot.slack.credential.blocks import wrapped_token_from

    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    dm = credential_dm(slack)
    # A Reveal got as far as Vault's unwrap, then the bot died: the claim is there (three
    # minutes old), the token is spent, nothing was shown.
    backends.bao.client(wrapped_token_from({"blocks": dm.blocks})).sys.unwrap()
    with bot.runtime.store.transaction() as s:
        grant = s.exec(select(Grant)).one()
        grant.reveal_claimed_at = grant.issued_at - timedelta(minutes=3)
        s.add(grant)
    click(bot, REQUESTER, dm, ActionId.REVEAL)
    assert events(bot, "reveal_tamper") == []
    assert request_row(bot, rid).state == State.ACTIVE
    fresh = wait_for(
        lambda: (
            (d := [m for m in slack.dms(REQUESTER) if "vault unwrap" in str(m.blocks)])
            and len(d) == 2
            and d
        ),
        timeout=20,
    )
    assert fresh[-1].ts != dm.ts
    user, password = reveal(bot, slack)
    assert backends.pg.can_login(user, password)


def test_an_unwrap_whose_answer_is_lost_is_replaced_not_a_tamper_alert(
    proxied, slack, backends, vault_proxy
):
    import threading

    bot = proxied
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    dm = credential_dm(slack)
    wrap_accessor = grant_of(bot).wrap_accessor
    root = backends.bao.client()

    def spent() -> bool:
        try:
            root.auth.token.lookup_accessor(wrap_accessor)
            return False
        except Exception:  # hvac: the accessor is gone, the token spent
            return True

    vault_proxy.slow(3, direction="down")  # Vault does the unwrap; its answer is held
    clicking = threading.Thread(target=bot.driver.click, args=(REQUESTER, dm, ActionId.REVEAL))
    clicking.start()
    wait_for(spent, timeout=10)
    vault_proxy.cut()  # ...and lost
    vault_proxy.restore()
    clicking.join(30)
    assert events(bot, "reveal_tamper") == [] and events(bot, "revealed") == []
    click(bot, REQUESTER, dm, ActionId.REVEAL)  # the person tries again, as told
    assert events(bot, "reveal_tamper") == [], "our own spent token is no tamper alert"
    assert request_row(bot, rid).state == State.ACTIVE
    wait_for(
        lambda: len([m for m in slack.dms(REQUESTER) if "vault unwrap" in str(m.blocks)]) == 2,
        timeout=20,
    )
    user, password = reveal(bot, slack)
    assert backends.pg.can_login(user, password)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, {"errors": ["Vault is sealed"]}),
        (403, {"errors": ["permission denied"]}),
        (429, {"errors": ["rate limit quota exceeded"]}),
        (500, {"errors": ["internal error"]}),
    ],
)
def test_a_revocation_vault_refuses_is_pending_until_it_accepts(bot, slack, backends, status, body):
    import responses

    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    user, password = reveal(bot, slack)
    revoke_url = f"{backends.bao.addr}/v1/sys/leases/revoke"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as vault:
        vault.add_passthru(backends.bao.addr)  # everything else reaches the real OpenBao
        vault.add(responses.PUT, revoke_url, status=status, json=body)
        vault.add(responses.POST, revoke_url, status=status, json=body)
        assert bot.service.grants.revoke(rid, REQUESTER) is False
        assert request_row(bot, rid).state == State.ENDING
        assert backends.pg.can_login(user, password)
        bot.service.grants.try_revoke(rid)  # still refused: no second notice
    assert len(events(bot, "revoke_failed")) == 1
    bot.service.grants.try_revoke(rid)  # Vault accepts again (or the retry timer got there)
    wait_for(lambda: request_row(bot, rid).state == State.REVOKED, timeout=10)
    assert not backends.pg.can_login(user, password)


def _emergency_grants(bot, slack, durations: dict[str, str]) -> dict[str, tuple[int, str, str]]:
    """One emergency grant per user: request id, database user and password."""
    out = {}
    for user, duration in durations.items():
        parent = request_access(bot, slack, user=user, duration=duration, emergency=True)
        out[user] = (request_id_of(parent), *reveal(bot, slack, user))
    return out


def _fire_together(bot, request_ids: list[int]) -> None:
    """The expiry timers of these requests fire at once, on threads of their own, as
    APScheduler fires jobs that come due in the same second."""
    jobs = [bot.runtime.scheduler.scheduler.get_job(f"expire:{rid}") for rid in request_ids]
    assert all(jobs)
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def fire(job) -> None:
        barrier.wait()
        try:
            job.func(*job.args)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fire, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors


@pytest.mark.parametrize(
    ("database_url", "how"),
    [("sqlite", "timers"), ("postgresql", "timers"), ("sqlite", "sweep")],
    indirect=["database_url"],
)
def test_grants_due_together_end_together_once_each(bot, slack, backends, clock, how):
    grants = _emergency_grants(
        bot, slack, {REQUESTER: "15m", APPROVER: "15m", APPROVER_2: "15m", OUTSIDER: "30m"}
    )
    clock.advance(timedelta(minutes=16))
    if how == "timers":
        _fire_together(bot, [rid for rid, _, _ in grants.values()])
    else:  # after a restart: the sweep ends the overdue ones as one batch
        assert bot.service.deadlines.sweep()["expired"] == 3
    for who, (rid, user, password) in grants.items():
        due = who != OUTSIDER
        assert request_row(bot, rid).state == (State.EXPIRED if due else State.ACTIVE), who
        assert backends.pg.can_login(user, password) is not due, who
        ended = [m for m in slack.dms(who) if "expired" in m.text]
        assert len(ended) == (1 if due else 0), who
    assert len(events(bot, "ending")) == len(events(bot, "expired")) == 3
    with bot.runtime.store.read() as s:
        assert audit.verify(s).ok


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_grants_due_together_while_vault_is_away_each_say_so_once_and_end_after(
    proxied, slack, backends, clock, vault_proxy
):
    bot = proxied
    grants = _emergency_grants(bot, slack, {REQUESTER: "15m", APPROVER: "15m", APPROVER_2: "15m"})
    vault_proxy.refuse()
    clock.advance(timedelta(minutes=16))
    _fire_together(bot, [rid for rid, _, _ in grants.values()])
    for rid, user, password in grants.values():
        assert request_row(bot, rid).state == State.ENDING
        assert backends.pg.can_login(user, password), "Vault was not reached: still alive"
    failed = events(bot, "revoke_failed")
    assert sorted(e.request_id for e in failed) == sorted(rid for rid, _, _ in grants.values())
    vault_proxy.restore()
    for rid, user, password in grants.values():
        wait_for(lambda rid=rid: request_row(bot, rid).state == State.EXPIRED, timeout=40)
        assert not backends.pg.can_login(user, password)
    assert len(events(bot, "revoke_failed")) == 3
    with bot.runtime.store.read() as s:
        assert audit.verify(s).ok
