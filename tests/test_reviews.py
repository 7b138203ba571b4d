"""Tier 3: post-incident reviews, from the end of an access to the review's closing, through
signed Slack requests against real OpenBao and SQLite/PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select

from bot.domain.workflow import State
from bot.sandbox.slack_fake import FakeSlack, Message, review_values
from bot.sandbox.stack import (
    APPROVER,
    APPROVER_2,
    OUTSIDER,
    POLICY,
    REQUESTER,
    Bot,
    start_bot,
)
from bot.slack.ids import ActionId, BlockId, ViewId
from bot.store import AuditEvent, Review, audit
from tests.helpers import (
    click,
    credential_dm,
    current,
    request_access,
    request_id_of,
    request_row,
    thread_texts,
    wait_for,
)

DUE = timedelta(hours=48)  # the policy's default review_due


def ended_emergency(bot: Bot, slack: FakeSlack, **kw: Any) -> tuple[Message, int]:
    """Break the glass, then end the access (the requester revokes it): a review is owed."""
    parent = request_access(bot, slack, emergency=True, **kw)
    rid = request_id_of(parent)
    user = kw.get("user", REQUESTER)
    click(bot, user, credential_dm(slack, user), ActionId.REVOKE)
    assert request_row(bot, rid).state == State.REVOKED
    return parent, rid


def review_messages(slack: FakeSlack, where: list[Message]) -> list[Message]:
    """The messages carrying a Review button."""
    return [m for m in where if any(b.get("block_id") == BlockId.REVIEW_ACTIONS for b in m.blocks)]


def thread_buttons(slack: FakeSlack, parent: Message) -> list[Message]:
    return review_messages(slack, slack.thread(parent.channel, parent.ts))


def review_row(bot: Bot, rid: int) -> Review | None:
    with bot.runtime.store.read() as s:
        return s.exec(select(Review).where(Review.request_id == rid)).first()


def actions(bot: Bot, rid: int) -> list[str]:
    with bot.runtime.store.read() as s:
        events = s.exec(
            select(AuditEvent).where(AuditEvent.request_id == rid).order_by(AuditEvent.seq)
        )
        return [e.action for e in events]


def open_review(bot: Bot, slack: FakeSlack, parent: Message, user: str) -> dict:
    opened = len(slack.views_opened())
    click(bot, user, thread_buttons(slack, parent)[0], ActionId.REVIEW)
    views = slack.views_opened()
    assert len(views) == opened + 1, f"no review modal; ephemerals: {slack.ephemerals(user)}"
    assert views[-1]["callback_id"] == ViewId.REVIEW
    return views[-1]


def chain_intact(bot: Bot) -> bool:
    with bot.runtime.store.read() as s:
        return audit.verify(s).ok


def with_policy(backends, slack, clock, database_url, tmp_path, policy: str) -> Bot:
    return start_bot(
        backends, slack, database_url, policy_text=policy, clock=clock, workdir=tmp_path
    )


# ---- owed ----------------------------------------------------------------------------------


def test_an_emergency_access_that_ends_owes_a_review(bot, slack, clock):
    parent, rid = ended_emergency(bot, slack)
    review = review_row(bot, rid)
    assert review is not None and review.reviewed_at is None and review.reminded_at is None
    assert review.owed_at == clock() and review.due_at == clock() + DUE
    assert actions(bot, rid)[-2:] == ["revoked", "review_opened"]
    # The thread: a reply with the Review button, naming the reviewers (never the requester).
    (button,) = thread_buttons(slack, parent)
    assert "A review of this access is owed" in button.text
    assert f"<@{APPROVER}>" in button.text and f"<@{APPROVER_2}>" in button.text
    assert f"<@{REQUESTER}>" not in button.text
    # The card: the review's state.
    card = str(current(slack, parent).blocks)
    assert "review owed" in card and "Ended (revoked)" in card
    # The timer for the reminder, at the due time; the sweep knows the deadline too.
    job = bot.runtime.scheduler.scheduler.get_job(f"review_due:{rid}")
    assert job is not None and job.next_run_time == review.due_at
    assert ("review_due", rid, review.due_at) in bot.service.deadlines.pending()
    assert chain_intact(bot)


def test_an_approved_access_owes_no_review_unless_its_resource_says_always(
    bot, slack, backends, clock, database_url, tmp_path
):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    click(bot, REQUESTER, credential_dm(slack), ActionId.REVOKE)
    assert request_row(bot, rid).state == State.REVOKED
    assert review_row(bot, rid) is None
    assert "review_opened" not in actions(bot, rid)
    assert thread_buttons(slack, parent) == []
    assert "review" not in str(current(slack, parent).blocks)
    bot.stop()

    always = POLICY.replace("    approvals: 1\n", "    approvals: 1\n    review: always\n")
    other = with_policy(backends, slack, clock, database_url, tmp_path, always)
    try:
        parent = request_access(other, slack)
        rid = request_id_of(parent)
        assert "review required" in str(current(slack, parent).blocks)
        click(other, APPROVER, parent, ActionId.APPROVE)
        click(other, REQUESTER, credential_dm(slack), ActionId.REVOKE)
        assert review_row(other, rid) is not None
        assert actions(other, rid)[-1] == "review_opened"
        assert len(thread_buttons(slack, parent)) == 1
        assert "review owed" in str(current(slack, parent).blocks)
    finally:
        other.stop()


def test_an_access_that_expires_owes_its_review_too(bot, slack, clock):
    parent = request_access(bot, slack, emergency=True, duration="15m")
    rid = request_id_of(parent)
    clock.advance(timedelta(minutes=15))
    assert bot.service.deadlines.sweep()["expired"] == 1
    assert request_row(bot, rid).state == State.EXPIRED
    assert review_row(bot, rid) is not None
    assert actions(bot, rid)[-2:] == ["expired", "review_opened"]


# ---- closing ---------------------------------------------------------------------------------


def test_the_review_modal_needs_notes_unless_legitimate(bot, slack):
    parent, rid = ended_emergency(bot, slack)
    view = open_review(bot, slack, parent, APPROVER)
    events = actions(bot, rid)
    for values, block, words in [
        (review_values(None, "fine"), BlockId.REVIEW_OUTCOME, "Choose an outcome"),
        (review_values("needs_follow_up", "  "), BlockId.REVIEW_NOTES, "Say what"),
        (review_values("misuse", None), BlockId.REVIEW_NOTES, "Say what"),
        (review_values("misuse", "bad\x00byte"), BlockId.REVIEW_NOTES, "control characters"),
        (review_values("misuse", "x" * 2001), BlockId.REVIEW_NOTES, "At most 2000"),
        (review_values("no-such-outcome", "x"), BlockId.REVIEW_OUTCOME, "Choose an outcome"),
    ]:
        r = bot.driver.submit_view(APPROVER, view, values)
        assert r.status_code == 200
        assert r.json()["response_action"] == "errors"
        assert words in r.json()["errors"][block]
    assert actions(bot, rid) == events, "nothing recorded"
    assert review_row(bot, rid).reviewed_at is None
    # Legitimate needs no notes.
    r = bot.driver.submit_view(APPROVER, view, review_values("legitimate"))
    assert r.status_code == 200 and r.text == ""
    review = review_row(bot, rid)
    assert (review.reviewer, review.outcome, review.notes) == (APPROVER, "legitimate", None)


def test_the_requester_and_strangers_are_refused_privately(bot, slack):
    parent, rid = ended_emergency(bot, slack)
    opened = len(slack.views_opened())
    for user in (REQUESTER, OUTSIDER):
        click(bot, user, thread_buttons(slack, parent)[0], ActionId.REVIEW)
    assert len(slack.views_opened()) == opened, "no modal for them"
    assert any("cannot review your own access" in t for t in slack.ephemerals(REQUESTER))
    assert any("not a reviewer" in t for t in slack.ephemerals(OUTSIDER))
    assert all(t.startswith(f"Request #{rid}: ") for t in slack.ephemerals(OUTSIDER))
    # A submission they crafted anyway is refused in the modal, and changes nothing.
    view = open_review(bot, slack, parent, APPROVER)
    r = bot.driver.submit_view(REQUESTER, view, review_values("legitimate"))
    assert "cannot review your own access" in r.json()["errors"][BlockId.REVIEW_OUTCOME]
    assert review_row(bot, rid).reviewed_at is None
    assert "review_closed" not in actions(bot, rid)


def test_a_reviewer_closes_it_once(bot, slack, clock):
    parent, rid = ended_emergency(bot, slack)
    view = open_review(bot, slack, parent, APPROVER)
    assert "Review #" in view["title"]["text"] and "emergency access" in json.dumps(view)
    notes = "Needed, but <!channel> the runbook\nshould cover this."
    r = bot.driver.submit_view(APPROVER, view, review_values("needs_follow_up", notes))
    assert r.status_code == 200 and r.text == ""
    review = review_row(bot, rid)
    assert review.reviewer == APPROVER and review.outcome == "needs_follow_up"
    assert review.reviewed_at == clock()
    with bot.runtime.store.read() as s:
        closed = s.exec(
            select(AuditEvent).where(
                AuditEvent.request_id == rid, AuditEvent.action == "review_closed"
            )
        ).one()
    assert closed.actor == APPROVER
    assert json.loads(closed.details) == {
        "resource": "prod-db",
        "outcome": "needs_follow_up",
        "notes": notes,
    }
    reply = thread_texts(slack, parent)[-1]
    assert f"Reviewed by <@{APPROVER}>: *needs follow-up*" in reply
    assert "&lt;!channel&gt;" in reply and "<!channel>" not in reply
    card = str(current(slack, parent).blocks)
    assert f"reviewed by <@{APPROVER}>: needs follow-up" in card
    # The same submission again, and another reviewer: told who closed it, nothing changes.
    again = bot.driver.submit_view(APPROVER, view, review_values("legitimate"))
    assert f"already reviewed by <@{APPROVER}>" in again.json()["errors"][BlockId.REVIEW_OUTCOME]
    click(bot, APPROVER_2, thread_buttons(slack, parent)[0], ActionId.REVIEW)
    assert any(f"already reviewed by <@{APPROVER}>" in t for t in slack.ephemerals(APPROVER_2))
    assert actions(bot, rid).count("review_closed") == 1
    assert review_row(bot, rid).outcome == "needs_follow_up"
    assert bot.runtime.scheduler.scheduler.get_job(f"review_due:{rid}") is None
    assert chain_intact(bot)


def test_reviewers_are_the_resources_reviewer_groups(
    backends, slack, clock, database_url, tmp_path
):
    policy = POLICY.replace(
        "    emergency: true\n", "    emergency: true\n    reviewers: [security]\n"
    )
    b = with_policy(backends, slack, clock, database_url, tmp_path, policy)
    try:
        parent, rid = ended_emergency(b, slack)
        click(b, APPROVER, thread_buttons(slack, parent)[0], ActionId.REVIEW)
        assert any("not a reviewer" in t for t in slack.ephemerals(APPROVER))
        view = open_review(b, slack, parent, APPROVER_2)
        r = b.driver.submit_view(APPROVER_2, view, review_values("legitimate", "On call, fine."))
        assert r.text == ""
        assert review_row(b, rid).reviewer == APPROVER_2
    finally:
        b.stop()


# ---- reminded --------------------------------------------------------------------------------


def test_an_overdue_review_is_reminded_once_and_listed_as_overdue(bot, slack, clock):
    parent, rid = ended_emergency(bot, slack)
    job = bot.runtime.scheduler.scheduler.get_job(f"review_due:{rid}")
    assert job is not None and job.misfire_grace_time is None
    job.func(*job.args)  # before its time: nothing
    assert review_row(bot, rid).reminded_at is None
    listed = bot.driver.command(APPROVER, "reviews").json()
    assert f"#{rid}" in listed["text"] and "due" in listed["text"]
    assert "overdue" not in listed["text"]

    clock.advance(DUE + timedelta(seconds=1))
    job.func(*job.args)
    review = review_row(bot, rid)
    assert review.reminded_at == clock() and review.reviewed_at is None
    # Once: the timer again, the sweep, and another replica's sweep do nothing.
    assert bot.service.deadlines.run("review_due", rid) is False
    assert bot.service.deadlines.sweep()["reminded"] == 0
    assert actions(bot, rid).count("review_reminded") == 1
    # In the thread, with the button; privately to each reviewer, with the button.
    reminders = [m for m in thread_buttons(slack, parent) if "Review overdue" in m.text]
    assert len(reminders) == 1
    for reviewer in (APPROVER, APPROVER_2):
        dms = [m for m in slack.dms(reviewer) if "Review overdue" in m.text]
        assert len(dms) == 1 and review_messages(slack, dms) == dms
        assert f"#{rid}" in dms[0].text and f"<@{REQUESTER}>" in dms[0].text
    assert not [m for m in slack.dms(REQUESTER) if "Review overdue" in m.text]
    assert "review overdue" in str(current(slack, parent).blocks)
    listed = bot.driver.command(APPROVER, "reviews").json()
    assert f"#{rid}" in listed["text"] and "overdue" in listed["text"]
    # The reviewer acts from the DM.
    opened = len(slack.views_opened())
    click(bot, APPROVER_2, review_messages(slack, slack.dms(APPROVER_2))[0], ActionId.REVIEW)
    view = slack.views_opened()[opened]
    r = bot.driver.submit_view(APPROVER_2, view, review_values("misuse", "Not an incident."))
    assert r.text == ""
    # The card's update may be in another thread's hands (the outbox worker's) just now.
    wait_for(lambda: "reviewed by" in str(current(slack, parent).blocks))
    assert f"#{rid}" not in bot.driver.command(APPROVER, "reviews").json()["text"]
    assert chain_intact(bot)


def test_the_sweep_reminds_what_no_timer_did(bot, slack, clock):
    _, rid = ended_emergency(bot, slack)
    bot.runtime.scheduler.cancel("review_due", rid)  # as if the process restarted
    assert bot.service.deadlines.sweep()["reminded"] == 0
    clock.advance(DUE)
    assert bot.service.deadlines.sweep()["reminded"] == 1
    assert review_row(bot, rid).reminded_at == clock()
    assert bot.service.deadlines.sweep()["reminded"] == 0


# ---- listing ---------------------------------------------------------------------------------


def test_reviews_command_lists_what_the_person_can_do(bot, slack):
    assert "No review is waiting for you" in bot.driver.command(APPROVER, "reviews").text
    _, rid = ended_emergency(bot, slack)
    _, other = ended_emergency(bot, slack, user=OUTSIDER)
    mine = bot.driver.command(APPROVER, "reviews").json()
    assert f"#{rid} `prod-db` by <@{REQUESTER}>" in mine["text"]
    assert f"#{other} `prod-db` by <@{OUTSIDER}>" in mine["text"]
    assert mine.get("response_type", "ephemeral") == "ephemeral"
    buttons = [
        b["accessory"]["value"]
        for b in mine["blocks"]
        if b.get("accessory", {}).get("action_id") == ActionId.REVIEW
    ]
    assert buttons == [str(rid), str(other)]
    # Nobody reviews their own access, and strangers review nothing.
    for user in (REQUESTER, OUTSIDER):
        assert "No review is waiting for you" in bot.driver.command(user, "reviews").text
    assert not [c for c in slack.calls_to("chat.postMessage") if c.args["channel"] == "C0GENERAL"]
    assert "/breakglass reviews" in bot.driver.command(APPROVER, "help").text


# ---- races -----------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_reviewers_at_once_close_it_once(bot, slack):
    parent, rid = ended_emergency(bot, slack)
    views = {u: open_review(bot, slack, parent, u) for u in (APPROVER, APPROVER_2)}
    barrier = threading.Barrier(2)
    answers: dict[str, Any] = {}

    def submit(user: str) -> None:
        barrier.wait()
        r = bot.driver.submit_view(user, views[user], review_values("misuse", f"by {user}"))
        answers[user] = r

    threads = [threading.Thread(target=submit, args=(u,)) for u in views]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in answers.values())
    winners = [u for u, r in answers.items() if r.text == ""]
    assert len(winners) == 1
    (loser,) = set(views) - set(winners)
    error = answers[loser].json()["errors"][BlockId.REVIEW_OUTCOME]
    assert f"already reviewed by <@{winners[0]}>" in error
    assert actions(bot, rid).count("review_closed") == 1
    review = review_row(bot, rid)
    assert review.reviewer == winners[0] and review.notes == f"by {winners[0]}"
    assert chain_intact(bot)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_replicas_remind_once(bot, slack, backends, clock, database_url, tmp_path):
    _, rid = ended_emergency(bot, slack)
    other = start_bot(backends, slack, database_url, clock=clock, workdir=tmp_path)
    try:
        clock.advance(DUE)
        barrier = threading.Barrier(2)
        results: list[bool] = []

        def remind(replica: Bot) -> None:
            barrier.wait()
            results.append(replica.service.deadlines.run("review_due", rid))

        threads = [threading.Thread(target=remind, args=(b,)) for b in (bot, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False, True]
        assert actions(bot, rid).count("review_reminded") == 1
        assert len([m for m in slack.dms(APPROVER) if "Review overdue" in m.text]) == 1
        assert chain_intact(bot)
    finally:
        other.stop()


# ---- tier 1: the rules and the builders ------------------------------------------------------


def test_the_rules_of_reviewing():
    from bot.domain.reviews import Outcome, check_review, check_reviewer, review_owed
    from bot.domain.workflow import Refused
    from bot.policy import Resource

    normal = Resource(provider="vault-token", approvers=["a"])
    always = Resource(provider="vault-token", approvers=["a"], review="always")
    assert review_owed(emergency=True, review_required=False, resource=normal)
    assert not review_owed(emergency=False, review_required=False, resource=normal)
    assert review_owed(emergency=False, review_required=False, resource=always)
    assert not review_owed(emergency=False, review_required=False, resource=None)
    with pytest.raises(Refused, match="your own"):
        check_reviewer(actor="U1", requester="U1", reviewers={"U1", "U2"})
    with pytest.raises(Refused, match="not a reviewer"):
        check_reviewer(actor="U3", requester="U1", reviewers={"U2"})
    check_reviewer(actor="U2", requester="U1", reviewers={"U2"})
    valid, _ = check_review("legitimate", "  ")
    assert valid is not None and valid.outcome == Outcome.LEGITIMATE and valid.notes is None
    valid, _ = check_review("misuse", " Shared the password. ")
    assert valid is not None and valid.notes == "Shared the password."
    assert set(check_review(None, None)[1]) == {"outcome"}
    assert set(check_review(["misuse"], "x")[1]) == {"outcome"}
    assert set(check_review("needs_follow_up", "")[1]) == {"notes"}
    assert "broken Unicode" in check_review("legitimate", "\ud800")[1]["notes"]


def test_review_builders_fit_slacks_limits():
    from datetime import UTC, datetime

    from bot.slack.review.blocks import LISTED_AT_MOST, read_review_form, review_list
    from bot.usecases.reviews import ReviewItem

    now = datetime.now(UTC)
    items = [ReviewItem(i, "r" * 128, "U0ALICE", now, overdue=i % 2 == 0) for i in range(1, 60)]
    text, blocks = review_list(items)
    assert len(blocks) == 1 + LISTED_AT_MOST + 1 <= 50
    assert "…and 39 more." in text
    assert read_review_form({"private_metadata": "not json", "state": 3}) == {
        "request_id": None,
        "outcome": None,
        "notes": None,
    }
