"""The fault suite, Slack: 500s, 429s and a bot left out of its channel lose no message, say
nothing before it happened, and never hold back a revocation."""

from __future__ import annotations

import logging

import pytest
from sqlmodel import select

from bot.domain.workflow import State
from bot.sandbox.slack_fake import request_values
from bot.sandbox.stack import APPROVER, REQUESTER, SECURITY_CHANNEL
from bot.slack.ids import ActionId
from bot.store import AccessRequest, AuditEvent, Grant, audit
from tests.helpers import (
    click,
    credential_dm,
    open_modal,
    request_access,
    request_id_of,
    request_row,
    reveal,
    thread_texts,
    wait_for,
)

pytestmark = pytest.mark.faults


def cards(slack) -> list:
    return [m for m in slack.channel_messages(SECURITY_CHANNEL) if m.thread_ts is None]


def submit(bot, slack, **kw) -> None:
    view = open_modal(bot, slack)
    values = request_values(
        kw.get("resource", "prod-db"), "30m", "Checkout is down, orders table locked.", "INC-1"
    )
    r = bot.driver.submit_view(REQUESTER, view, values)
    assert r.status_code == 200 and r.text == "", r.text


def chain_intact(bot) -> None:
    with bot.runtime.store.read() as s:
        assert audit.verify(s).ok


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_card_lost_to_a_slack_outage_is_posted_once_slack_answers(bot, slack):
    view = open_modal(bot, slack)
    slack.outage(True)
    values = request_values("prod-db", "30m", "Checkout is down, orders table locked.", "INC-1")
    r = bot.driver.submit_view(REQUESTER, view, values)
    assert r.status_code == 200 and r.text == "", "the form is accepted: the card is owed"
    assert cards(slack) == [], "Slack is down: nothing was posted"
    with bot.runtime.store.read() as s:
        assert s.exec(select(AccessRequest)).one().state == State.PENDING
    slack.outage(False)
    card = wait_for(lambda: cards(slack), timeout=20)[0]
    assert "#1" in card.text
    # The first reply hangs under that card, and the requester hears it is pending.
    wait_for(lambda: any("asked for" in t for t in thread_texts(slack, card)), timeout=20)
    wait_for(lambda: any("waiting for approval" in m.text for m in slack.dms(REQUESTER)))
    assert len(cards(slack)) == 1
    chain_intact(bot)


def test_429_with_retry_after_is_honoured_inside_the_call(bot, slack):
    slack.fail("chat.postMessage", status=429, retry_after=1, times=1)
    submit(bot, slack)
    assert len(cards(slack)) == 1
    attempts = slack.attempts_to("chat.postMessage")
    limited = next(c for c in attempts if c.status == 429)
    again = next(c for c in attempts if c.ok and c.dump() == limited.dump())
    assert again.at - limited.at >= 1.0, "Retry-After honoured"


def test_a_credential_dm_that_fails_is_revoked_and_reissued_when_slack_answers(
    bot, slack, backends
):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    slack.outage(True)
    click_status = bot.driver.click(APPROVER, parent, ActionId.APPROVE).status_code
    assert click_status == 200
    assert request_row(bot, rid).state == State.ACTIVE
    with bot.runtime.store.read() as s:
        first = s.exec(select(Grant)).one()
        events = [e.action for e in s.exec(select(AuditEvent).order_by(AuditEvent.seq))]
    assert first.delivered_at is None and "delivered" not in events
    assert "delivery_failed" in events
    slack.outage(False)

    def delivered() -> Grant | None:
        with bot.runtime.store.read() as s:
            grant = s.exec(select(Grant)).one()
        return grant if grant.delivered_at else None

    fresh = wait_for(delivered, timeout=20)
    assert fresh.token_accessor != first.token_accessor
    dm = [m for m in slack.dms(REQUESTER) if "vault unwrap" in str(m.blocks)]
    assert len(dm) == 1, "one credential message, the fresh one"
    root = backends.bao.client()
    with pytest.raises(Exception):  # noqa: B017 (hvac: the undelivered one is gone)
        root.auth.token.lookup_accessor(first.token_accessor)
    user, password = reveal(bot, slack)
    assert backends.pg.can_login(user, password)
    texts = wait_for(
        lambda: (
            (t := thread_texts(slack, parent)) and any("delivered privately" in x for x in t) and t
        )
    )
    assert any("could not be delivered" in t for t in texts)
    chain_intact(bot)


def test_a_card_the_bot_may_not_post_goes_out_once_invited(bot, slack, caplog):
    caplog.set_level(logging.WARNING)
    slack.bot_in_channel = False
    submit(bot, slack)
    assert cards(slack) == []
    assert any("/invite @breakglass" in r.getMessage() for r in caplog.records)
    assert any("waiting for approval" in m.text for m in slack.dms(REQUESTER)), (
        "the requester's messages do not wait behind the card"
    )
    slack.bot_in_channel = True
    wait_for(lambda: cards(slack), timeout=20)


def test_revocation_never_waits_on_slack(bot, slack, backends):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    user, password = reveal(bot, slack)
    slack.outage(True)
    assert bot.driver.click(REQUESTER, credential_dm(slack), ActionId.REVOKE).status_code == 200
    assert request_row(bot, rid).state == State.REVOKED
    assert not backends.pg.can_login(user, password)
    slack.outage(False)
    wait_for(lambda: any("Revoked by" in t for t in thread_texts(slack, parent)), timeout=20)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_replayed_submission_files_nothing_new(bot, slack):
    view = open_modal(bot, slack)
    values = request_values("prod-db", "30m", "Checkout is down, orders table locked.", None, True)
    assert bot.driver.submit_view(REQUESTER, view, values).status_code == 200
    rid = 1
    assert request_row(bot, rid).state == State.ACTIVE
    bot.driver.command(REQUESTER, f"revoke {rid}")
    assert request_row(bot, rid).state == State.REVOKED
    alerts = [c for c in slack.calls_to("chat.postMessage") if "<!here>" in c.dump()]
    # The same signed submission again, after the request ended: nothing new.
    assert bot.driver.submit_view(REQUESTER, view, values).status_code == 200
    with bot.runtime.store.read() as s:
        assert len(s.exec(select(AccessRequest)).all()) == 1
    assert [c for c in slack.calls_to("chat.postMessage") if "<!here>" in c.dump()] == alerts


def test_a_replay_is_one_persons_same_modal_not_anyone_elses(bot, slack):
    from bot.sandbox.stack import OUTSIDER

    view = open_modal(bot, slack)
    values = request_values("prod-db", "30m", "Checkout is down, orders table locked.", None)
    assert bot.driver.submit_view(REQUESTER, view, values).status_code == 200
    assert bot.driver.submit_view(OUTSIDER, view, values).status_code == 200
    with bot.runtime.store.read() as s:
        assert sorted(r.requester for r in s.exec(select(AccessRequest))) == sorted(
            [OUTSIDER, REQUESTER]
        )


def test_a_reveal_window_slack_cannot_fill_in_gets_a_fresh_credential(bot, slack, backends):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    first = credential_dm(slack)
    slack.fail("views.update", status=500, times=3)  # the call and both of its retries
    assert bot.driver.click(REQUESTER, first, ActionId.REVEAL).status_code == 200
    with bot.runtime.store.read() as s:
        events = [e.action for e in s.exec(select(AuditEvent).order_by(AuditEvent.seq))]
    assert "revealed" not in events, "nothing was shown, so nothing counts as revealed"
    assert any("could not be shown" in m.text for m in slack.dms(REQUESTER))

    def fresh_dm():
        dms = [m for m in slack.dms(REQUESTER) if "vault unwrap" in str(m.blocks)]
        return len(dms) == 2 and dms[-1]

    wait_for(fresh_dm, timeout=20)
    user, password = reveal(bot, slack)
    assert backends.pg.can_login(user, password)
    assert request_row(bot, rid).state == State.ACTIVE
