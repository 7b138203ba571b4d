"""Tier 3: the whole bot over HTTP, signed requests in, the Slack fake recording what went out,
a real OpenBao and a real PostgreSQL behind it."""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from bot.domain.workflow import State
from bot.sandbox.slack_fake import request_values
from bot.sandbox.stack import APPROVER, APPROVER_2, OUTSIDER, REQUESTER, SECURITY_CHANNEL
from bot.slack.ids import ActionId, BlockId, ViewId
from bot.store import AccessRequest, AuditEvent, Grant
from tests.helpers import (
    click,
    credential_dm,
    current,
    open_modal,
    request_access,
    request_id_of,
    request_row,
    reveal,
    tamper,
    thread_texts,
    wait_for,
)

# On both stores where the database settles something (locks, races, constraints, the
# audit chain, what is stored); the rest is the same code on either and runs on SQLite.
BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def count_rows(bot, model) -> int:
    with bot.runtime.store.read() as s:
        return len(s.exec(select(model)).all())


# ---- 1. the slash command and the modal -------------------------------------------------


def test_command_opens_modal_with_policy_resources(bot, slack):
    view = open_modal(bot, slack)
    assert view["callback_id"] == ViewId.REQUEST
    select_block = next(b for b in view["blocks"] if b["block_id"] == BlockId.RESOURCE)
    options = [o["value"] for o in select_block["element"]["options"]]
    assert options == ["prod-db", "prod-db-two-keys"]
    block_ids = {b["block_id"] for b in view["blocks"]}
    assert {BlockId.DURATION, BlockId.JUSTIFICATION, BlockId.TICKET, BlockId.EMERGENCY} <= block_ids
    emergency = next(b for b in view["blocks"] if b["block_id"] == BlockId.EMERGENCY)
    assert "confirm" in emergency["element"], "breaking the glass asks for confirmation"


def test_help_is_ephemeral_in_the_response(bot, slack):
    r = bot.driver.command(REQUESTER, "help")
    assert r.status_code == 200
    assert "/breakglass revoke" in r.text and "prod-db" in r.text
    assert slack.calls_to("chat.postMessage") == []
    assert slack.calls_to("views.open") == []


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        (("prod-db", "30m", "", None, False), BlockId.JUSTIFICATION, "Say why"),
        (("prod-db", "30m", "it broke", None, False), BlockId.JUSTIFICATION, "at least"),
        (("prod-db", "2h", "x" * 40, None, False), BlockId.DURATION, "at most 1 h"),
        (("prod-db", "soon", "x" * 40, None, False), BlockId.DURATION, "not a duration"),
        (("no-such-db", "30m", "x" * 40, None, False), BlockId.RESOURCE, "Unknown resource"),
        (("prod-db-two-keys", "10m", "x" * 40, None, True), BlockId.EMERGENCY, "not allowed"),
    ],
)
def test_invalid_input_gets_inline_errors_and_records_nothing(bot, slack, values, field, words):
    view = open_modal(bot, slack)
    r = bot.driver.submit_view(REQUESTER, view, request_values(*values))
    assert r.status_code == 200
    body = r.json()
    assert body["response_action"] == "errors"
    assert words in body["errors"][field]
    assert count_rows(bot, AccessRequest) == 0
    assert count_rows(bot, AuditEvent) == 0
    assert slack.calls_to("chat.postMessage") == []


# ---- 2. submitting --------------------------------------------------------------------------


@BOTH
def test_submit_records_request_and_posts_card_with_buttons(bot, slack):
    parent = request_access(bot, slack, ticket="INC-4711")
    rid = request_id_of(parent)
    row = request_row(bot, rid)
    assert row.state == State.PENDING and row.requester == REQUESTER
    assert row.duration_seconds == 1800 and row.ticket == "INC-4711"
    assert (row.channel, row.thread_ts) == (SECURITY_CHANNEL, parent.ts)
    card = str(parent.blocks)
    for expected in (
        f"<@{REQUESTER}>",
        "prod-db",
        "30 min",
        "INC-4711",
        "orders table",
        f"<@{APPROVER}>",
        f"<@{APPROVER_2}>",
    ):
        assert expected in card
    buttons = [
        e["action_id"] for b in parent.blocks if b["type"] == "actions" for e in b["elements"]
    ]
    assert buttons == [ActionId.APPROVE, ActionId.DENY]
    approve = next(e for b in parent.blocks if b["type"] == "actions" for e in b["elements"])
    assert "confirm" in approve, "Approve must ask for confirmation"
    pending = [m.text for m in slack.dms(REQUESTER)]
    assert any("waiting for approval" in t for t in pending)


@BOTH
def test_one_open_request_per_person_and_resource(bot, slack):
    first = request_access(bot, slack)
    rid = request_id_of(first)
    view = open_modal(bot, slack)
    again = bot.driver.submit_view(REQUESTER, view, request_values("prod-db", "30m", "x" * 40))
    assert again.json()["response_action"] == "errors"
    assert f"/breakglass cancel {rid}" in again.json()["errors"][BlockId.RESOURCE]
    assert count_rows(bot, AccessRequest) == 1
    click(bot, APPROVER, first, ActionId.APPROVE)
    again = bot.driver.submit_view(REQUESTER, view, request_values("prod-db", "30m", "x" * 40))
    assert f"/breakglass revoke {rid}" in again.json()["errors"][BlockId.RESOURCE]
    # Another resource, or another person, is fine; so is asking again once it ended.
    request_access(bot, slack, resource="prod-db-two-keys", duration="10m")
    request_access(bot, slack, user=OUTSIDER)
    click(bot, REQUESTER, credential_dm(slack), ActionId.REVOKE)
    request_access(bot, slack)
    assert count_rows(bot, AccessRequest) == 4


def test_justification_cannot_ping_the_channel(bot, slack):
    parent = request_access(bot, slack, justification="<!channel> please <@U0BOB> it is down!!")
    assert "<!channel>" not in str(parent.blocks)
    assert "&lt;!channel&gt;" in str(parent.blocks)


# ---- 3. approve and deny ----------------------------------------------------------------------


def test_requester_cannot_approve_own_request(bot, slack, all_logs):
    parent = request_access(bot, slack)
    click(bot, REQUESTER, parent, ActionId.APPROVE)
    assert request_row(bot, request_id_of(parent)).state == State.PENDING
    assert any("own request" in t for t in slack.ephemerals(REQUESTER))
    assert any(
        f"refused breakglass.grant.approve on request {request_id_of(parent)} by {REQUESTER}"
        in r.getMessage()
        for r in all_logs.records
    ), "the attempt is in the log"
    assert count_rows(bot, Grant) == 0


def test_outsider_cannot_approve(bot, slack):
    parent = request_access(bot, slack)
    click(bot, OUTSIDER, parent, ActionId.APPROVE)
    assert request_row(bot, request_id_of(parent)).state == State.PENDING
    assert any("not an approver" in t for t in slack.ephemerals(OUTSIDER))


@BOTH
def test_double_click_issues_one_credential(bot, slack, backends):
    parent = request_access(bot, slack)
    results = []

    def press() -> None:
        results.append(bot.driver.click(APPROVER, parent, ActionId.APPROVE).status_code)

    threads = [threading.Thread(target=press) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4
    rid = request_id_of(parent)
    assert request_row(bot, rid).state == State.ACTIVE
    assert count_rows(bot, Grant) == 1
    assert len([m for m in slack.dms(REQUESTER) if m.blocks]) == 1, "one credential message"
    assert len(slack.ephemerals(APPROVER)) == 3, "the other clicks are told why nothing happened"
    # Vault holds exactly one token for this request.
    with bot.runtime.store.read() as s:
        grant = s.exec(select(Grant)).one()
    meta = backends.bao.client().auth.token.lookup_accessor(grant.token_accessor)["data"]["meta"]
    assert meta["breakglass_request"] == str(rid)


@BOTH
def test_two_approvers_at_once_issue_one_credential(bot, slack):
    parent = request_access(bot, slack)
    barrier = threading.Barrier(2)

    def press(user: str) -> None:
        barrier.wait()
        bot.driver.click(user, parent, ActionId.APPROVE)

    threads = [threading.Thread(target=press, args=(u,)) for u in (APPROVER, APPROVER_2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rid = request_id_of(parent)
    assert request_row(bot, rid).state == State.ACTIVE
    assert count_rows(bot, Grant) == 1
    with bot.runtime.store.read() as s:
        actions = [e.action for e in s.exec(select(AuditEvent).order_by(AuditEvent.seq))]
    assert actions == ["requested", "approved", "issued", "delivered"]
    told = slack.ephemerals(APPROVER) + slack.ephemerals(APPROVER_2)
    assert len(told) == 1, "the slower approver is told nothing changed"


@BOTH
def test_click_on_finished_request_changes_nothing(bot, slack):
    parent = request_access(bot, slack)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    events = count_rows(bot, AuditEvent)
    click(bot, APPROVER_2, parent, ActionId.APPROVE)
    click(bot, APPROVER_2, parent, ActionId.DENY)
    assert count_rows(bot, AuditEvent) == events
    assert count_rows(bot, Grant) == 1
    told = slack.ephemerals(APPROVER_2)
    assert len(told) == 2 and all("already active" in t for t in told)
    assert slack.calls_to("views.open")[-1].args["view"]["callback_id"] == ViewId.REQUEST


def test_deny_asks_for_reason_and_tells_requester(bot, slack):
    parent = request_access(bot, slack)
    click(bot, APPROVER, parent, ActionId.DENY)
    deny_view = slack.views_opened()[-1]
    assert deny_view["callback_id"] == ViewId.DENY
    from bot.sandbox.slack_fake import deny_values

    empty = bot.driver.submit_view(APPROVER, deny_view, deny_values("  "))
    assert empty.json()["response_action"] == "errors"
    assert request_row(bot, request_id_of(parent)).state == State.PENDING
    r = bot.driver.submit_view(APPROVER, deny_view, deny_values("Use the read replica."))
    assert r.status_code == 200 and r.text == ""
    assert request_row(bot, request_id_of(parent)).state == State.DENIED
    assert any("denied" in m.text for m in slack.dms(REQUESTER))
    assert "Use the read replica." in str(current(slack, parent).blocks)
    assert not any(b["type"] == "actions" for b in current(slack, parent).blocks)
    assert count_rows(bot, Grant) == 0


@BOTH
def test_two_approvals_need_two_distinct_approvers(bot, slack):
    parent = request_access(bot, slack, resource="prod-db-two-keys", duration="10m")
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    assert request_row(bot, rid).state == State.PENDING
    assert "1 of 2 approvals" in str(current(slack, parent).blocks)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    assert request_row(bot, rid).state == State.PENDING
    assert any("already" in t for t in slack.ephemerals(APPROVER))
    click(bot, APPROVER_2, parent, ActionId.APPROVE)
    assert request_row(bot, rid).state == State.ACTIVE


# ---- 4. emergency ----------------------------------------------------------------------------


@BOTH
def test_emergency_grants_at_once_loudly_and_needs_review(bot, slack, backends):
    parent = request_access(bot, slack, emergency=True)
    rid = request_id_of(parent)
    row = request_row(bot, rid)
    assert row.state == State.ACTIVE and row.emergency and row.review_required
    card = str(current(slack, parent).blocks)
    assert "EMERGENCY" in card and "review required" in card
    alerts = [c.args for c in slack.calls_to("chat.postMessage") if c.args.get("reply_broadcast")]
    assert alerts and "<!here>" in alerts[0]["text"]
    user, password = reveal(bot, slack)
    assert backends.pg.can_login(user, password)


# ---- 5. issue through Vault --------------------------------------------------------------------


def test_issued_credential_works_with_lease_ttl_equal_to_grant(bot, slack, backends):
    parent = request_access(bot, slack, duration="20m")
    click(bot, APPROVER, parent, ActionId.APPROVE)
    user, password = reveal(bot, slack)
    assert backends.pg.can_login(user, password)
    assert not backends.pg.can_login(user, password + "x"), "PostgreSQL checks passwords"
    with bot.runtime.store.read() as s:
        grant = s.exec(select(Grant)).one()
    assert grant.identity == user
    assert grant.expires_at - grant.issued_at == timedelta(minutes=20)
    root = backends.bao.client()
    token = root.auth.token.lookup_accessor(grant.token_accessor)["data"]
    assert 20 * 60 - 30 <= token["ttl"] <= 20 * 60
    assert token["explicit_max_ttl"] == 20 * 60
    lease = root.sys.read_lease(grant.lease_id)["data"]
    assert 20 * 60 - 30 <= lease["ttl"] <= 20 * 60, "Vault ends the lease by itself on time"


@BOTH
def test_reveal_is_single_use_and_only_for_requester(bot, slack):
    parent = request_access(bot, slack)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    dm = credential_dm(slack)
    click(bot, APPROVER, dm, ActionId.REVEAL)
    assert any("only the requester" in t for t in slack.ephemerals(APPROVER))
    reveal(bot, slack)
    opened = len(slack.views_opened())
    click(bot, REQUESTER, dm, ActionId.REVEAL)
    assert len(slack.views_opened()) == opened
    assert any("already revealed" in t for t in slack.ephemerals(REQUESTER))


@BOTH
def test_unwrapped_by_someone_else_is_a_tamper_alert_and_revokes(bot, slack, backends):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    from bot.slack.credential.blocks import wrapped_token_from

    token = wrapped_token_from({"blocks": credential_dm(slack).blocks})
    stolen = backends.bao.client(token).sys.unwrap()["data"]
    assert backends.pg.can_login(stolen["username"], stolen["password"])
    click(bot, REQUESTER, credential_dm(slack), ActionId.REVEAL)
    assert "already been unwrapped" in json.dumps(slack.views_updated()[-1])
    assert any("Tamper alert" in t for t in thread_texts(slack, parent))
    assert request_row(bot, rid).state == State.REVOKED
    assert not backends.pg.can_login(stolen["username"], stolen["password"])


@BOTH
def test_secret_never_reaches_channels_logs_or_database(bot, slack, all_logs):
    parent = request_access(bot, slack)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    from bot.slack.credential.blocks import wrapped_token_from

    wrapping_token = wrapped_token_from({"blocks": credential_dm(slack).blocks})
    user, password = reveal(bot, slack)
    click(bot, REQUESTER, credential_dm(slack), ActionId.REVOKE)

    # Slack: the password went out once, in the reveal modal to the requester; never in a message.
    for call in slack.calls:
        if password in call.dump():
            assert (
                call.method == "views.update" and "Credential" in call.args["view"]["title"]["text"]
            )
    messages = [
        c for c in slack.calls if c.method.startswith("chat.") or c.method == "response_url"
    ]
    assert messages and not any(password in c.dump() for c in messages)
    # The wrapping token is only in the requester's own DM.
    for call in messages:
        if wrapping_token in call.dump():
            assert call.args["channel"] == REQUESTER
    # Logs: at DEBUG, every logger.
    logged = "\n".join(r.getMessage() + str(r.args) for r in all_logs.records)
    assert all_logs.records, "logging was captured"
    assert password not in logged and wrapping_token not in logged
    # Database: every column of every table.
    with bot.runtime.store.engine.connect() as c:
        for table in ("access_request", "decision", "access_grant", "audit_event", "review"):
            dump = str(c.execute(text(f"SELECT * FROM {table}")).fetchall())  # noqa: S608
            assert password not in dump and wrapping_token not in dump, table
    assert user in str(
        bot.runtime.store.engine.connect()
        .execute(text("SELECT identity FROM access_grant"))
        .fetchall()
    ), "the identity is recorded"


# ---- 6. revocation -------------------------------------------------------------------------------


@BOTH
def test_expiry_revokes_on_time_through_the_timer(bot, slack, backends, clock):
    parent = request_access(bot, slack, duration="15m")
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    user, password = reveal(bot, slack)
    with bot.runtime.store.read() as s:
        grant = s.exec(select(Grant)).one()
    job = bot.runtime.scheduler.scheduler.get_job(f"expire:{rid}")
    assert job is not None and job.next_run_time == grant.expires_at
    assert job.misfire_grace_time is None
    # Before its time the timer does nothing.
    job.func(*job.args)
    assert request_row(bot, rid).state == State.ACTIVE
    clock.advance(timedelta(minutes=15))
    job.func(*job.args)
    assert request_row(bot, rid).state == State.EXPIRED
    assert not backends.pg.can_login(user, password)
    assert bot.runtime.scheduler.scheduler.get_job(f"expire:{rid}") is None
    assert any("expired" in m.text for m in slack.dms(REQUESTER))


@BOTH
def test_sweep_after_restart_ends_overdue_grants(
    bot, slack, backends, clock, database_url, tmp_path
):
    parent = request_access(bot, slack, duration="5m")
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    user, password = reveal(bot, slack)
    bot.stop()  # the bot goes down while the grant is active...
    clock.advance(timedelta(minutes=6))
    from bot.sandbox.stack import start_bot

    again = start_bot(backends, slack, database_url, clock=clock, workdir=tmp_path)
    try:  # ...and the new process ends it at start, in a job: the server answers meanwhile
        wait_for(lambda: request_row(again, rid).state == State.EXPIRED)
        assert not backends.pg.can_login(user, password)
    finally:
        again.stop()


@BOTH
def test_revoke_now_button(bot, slack, backends):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    user, password = reveal(bot, slack)
    click(bot, OUTSIDER, credential_dm(slack), ActionId.REVOKE)
    assert request_row(bot, rid).state == State.ACTIVE
    assert backends.pg.can_login(user, password)
    click(bot, REQUESTER, credential_dm(slack), ActionId.REVOKE)
    assert request_row(bot, rid).state == State.REVOKED
    assert not backends.pg.can_login(user, password)
    with bot.runtime.store.read() as s:
        grant = s.exec(select(Grant)).one()
    assert grant.ended_by == REQUESTER and grant.end_reason == "revoked"


def test_revoke_command_by_approver(bot, slack, backends):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    user, password = reveal(bot, slack)
    r = bot.driver.command(APPROVER_2, f"revoke {rid}")
    assert r.status_code == 200
    assert request_row(bot, rid).state == State.REVOKED
    assert not backends.pg.can_login(user, password)
    assert any(f"#{rid} revoked" in t for t in slack.ephemerals(APPROVER_2))
    bad = bot.driver.command(APPROVER_2, "revoke everything")
    assert "Usage" in bad.text


# ---- 7. audit ------------------------------------------------------------------------------------


@BOTH
def test_every_transition_is_one_audit_event_and_one_thread_reply(bot, slack):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    reveal(bot, slack)
    click(bot, REQUESTER, credential_dm(slack), ActionId.REVOKE)
    with bot.runtime.store.read() as s:
        events = s.exec(
            select(AuditEvent).where(AuditEvent.request_id == rid).order_by(AuditEvent.seq)
        ).all()
    actions = [e.action for e in events]
    assert actions == [
        "requested",
        "approved",
        "issued",
        "delivered",
        "revealed",
        "ending",
        "revoked",
    ]
    # Each reply names its audit event and hash: the thread witnesses the chain.
    witnessed = [str(m.blocks) for m in slack.thread(parent.channel, parent.ts)]
    # The intent to end is audited; Slack hears of the end itself.
    events = [e for e in events if e.action != "ending"]
    for event, reply in zip(events, witnessed, strict=True):
        assert f"audit #{event.seq} · `{event.hash[:16]}`" in reply
    replies = thread_texts(slack, parent)
    assert len(replies) == len(actions) - 1
    assert "asked for" in replies[0] and "Approved by" in replies[1]
    assert "Issued" in replies[2] and "delivered privately" in replies[3]
    assert "revealed" in replies[4] and "Revoked" in replies[5]
    final = current(slack, parent)
    assert final.edits == 5 and "Ended (revoked)" in str(final.blocks)


@BOTH
def test_audit_export_writes_the_chain_as_json_lines(
    bot, slack, monkeypatch, database_url, tmp_path
):
    first = request_access(bot, slack)
    click(bot, APPROVER, first, ActionId.APPROVE)
    second = request_access(
        bot,
        slack,
        resource="prod-db-two-keys",
        duration="10m",
        justification="Another incident, another reason.",
    )
    from bot.cli import main

    monkeypatch.setenv("DATABASE_URL", database_url)
    out = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "-o", str(out)]) == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(events))
    assert events[0]["details"]["justification"].startswith("Checkout is down")
    assert main(["audit", "export", "-o", str(out), "--request", str(request_id_of(second))]) == 0
    only = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["action"] for e in only] == ["requested"]


@BOTH
def test_audit_verify_detects_an_edited_row(bot, slack, monkeypatch, capsys, database_url):
    parent = request_access(bot, slack)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    from bot.cli import main

    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["audit", "verify"]) == 0
    assert "intact: 4 events" in capsys.readouterr().out
    # The database itself refuses the edit (append-only triggers) ...
    with pytest.raises(DBAPIError, match="append-only"):
        with bot.runtime.store.engine.begin() as c:
            c.execute(text("UPDATE audit_event SET actor = 'U0SOMEONE' WHERE seq = 2"))
    # ... and when its owner switches them off, the chain tells.
    tamper(bot.runtime.store.engine, "UPDATE audit_event SET actor = 'U0SOMEONE' WHERE seq = 2")
    assert main(["audit", "verify"]) == 1
    assert "broken at event 2" in capsys.readouterr().err


# ---- 8. the HTTP surface -----------------------------------------------------------------------


def test_bad_signature_and_stale_timestamp_get_401(bot, slack):
    assert bot.driver.command(REQUESTER, signature="v0=" + "0" * 64).status_code == 401
    stale = int(time.time()) - 600
    assert bot.driver.command(REQUESTER, timestamp=stale).status_code == 401
    assert slack.calls_to("views.open") == []
    assert count_rows(bot, AccessRequest) == 0


def test_healthz_is_liveness_and_readyz_names_each_part(bot):
    import requests

    r = requests.get(f"{bot.server.url}/healthz", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"ok": True, "scheduler": "running"}
    r = requests.get(f"{bot.server.url}/readyz", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"ok": True, "database": "ok", "vault": "ok", "slack": "ok"}


@BOTH
def test_request_without_decision_times_out(bot, slack, clock):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    job = bot.runtime.scheduler.scheduler.get_job(f"timeout:{rid}")
    assert job is not None and job.next_run_time == request_row(bot, rid).timeout_at
    assert bot.service.deadlines.sweep() == {
        "revoked": 0,
        "expired": 0,
        "timed_out": 0,
        "interrupted": 0,
        "reminded": 0,
        "failed": 0,
    }
    clock.advance(timedelta(minutes=30))
    assert bot.service.deadlines.sweep()["timed_out"] == 1
    assert request_row(bot, rid).state == State.TIMED_OUT
    assert any("timed out" in m.text for m in slack.dms(REQUESTER))
    assert "Timed out" in str(current(slack, parent).blocks)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    assert any("already timed out" in t for t in slack.ephemerals(APPROVER))
    assert count_rows(bot, Grant) == 0


def test_credential_message_drops_the_spent_token_and_ends_with_the_grant(bot, slack):
    parent = request_access(bot, slack)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    from bot.slack.credential.blocks import wrapped_token_from

    token = wrapped_token_from({"blocks": credential_dm(slack).blocks})
    assert token
    reveal(bot, slack)
    after_reveal = credential_dm(slack)
    assert token not in str(after_reveal.blocks)
    buttons = [
        e["action_id"] for b in after_reveal.blocks if b["type"] == "actions" for e in b["elements"]
    ]
    assert buttons == [ActionId.REVOKE]
    assert "revealed" in str(after_reveal.blocks)
    click(bot, REQUESTER, after_reveal, ActionId.REVOKE)
    ended = next(m for m in slack.dms(REQUESTER) if m.ts == after_reveal.ts)
    assert "no longer works" in str(ended.blocks)
    assert not any(b["type"] == "actions" for b in ended.blocks)


def test_the_bots_own_vault_token_is_renewed(bot, backends):
    job = bot.runtime.scheduler.scheduler.get_job("vault-auth")
    assert job is not None, "the bot looks after its own Vault token"
    backends.bao.client().auth.token.renew(backends.bot_token, increment="1h")
    assert backends.bao.client(backends.bot_token).auth.token.lookup_self()["data"]["ttl"] <= 3600
    job.func()
    assert backends.bao.client(backends.bot_token).auth.token.lookup_self()["data"]["ttl"] > 3600


def test_a_button_value_that_is_no_request_id_gets_a_clear_answer(bot, slack):
    parent = request_access(bot, slack)
    for block in parent.blocks:
        for element in block.get("elements", []):
            if element.get("action_id") == ActionId.APPROVE:
                element["value"] = "not-a-request-id"
    r = bot.driver.click(APPROVER, parent, ActionId.APPROVE)
    assert r.status_code == 200
    assert any("is not a request id" in t for t in slack.ephemerals(APPROVER))
    assert request_row(bot, request_id_of(parent)).state == State.PENDING


def test_unexpected_error_gets_a_reference_not_a_trace(bot, slack, all_logs):
    parent = request_access(bot, slack)
    with bot.runtime.store.engine.begin() as c:  # a real fault: the database lost a table
        c.execute(sa.text("ALTER TABLE decision RENAME TO decision_gone"))
    try:
        r = bot.driver.click(APPROVER, parent, ActionId.APPROVE)
    finally:
        with bot.runtime.store.engine.begin() as c:
            c.execute(sa.text("ALTER TABLE decision_gone RENAME TO decision"))
    assert r.status_code == 200
    told = slack.ephemerals(APPROVER)
    assert len(told) == 1 and "Something went wrong on our side (ref `" in told[0]
    assert "Traceback" not in told[0] and "Error" not in told[0]
    ref = told[0].split("`")[1]
    assert any(ref in r.getMessage() and r.exc_info for r in all_logs.records)
    assert request_row(bot, request_id_of(parent)).state == State.PENDING


def test_grant_never_promises_more_than_vault_gave(backends, slack, clock, database_url, tmp_path):
    from bot.sandbox.stack import CAPPED_ROLE, POLICY, start_bot

    policy = POLICY.replace(
        "options: {mount: database, role: breakglass-rw}\n    max_duration: 1h",
        f"options: {{mount: database, role: {CAPPED_ROLE}}}\n    max_duration: 1h",
    )
    capped = start_bot(
        backends,
        slack,
        database_url,
        policy_text=policy,
        clock=clock,
        workdir=tmp_path,
    )
    try:
        parent = request_access(capped, slack, duration="30m")
        click(capped, APPROVER, parent, ActionId.APPROVE)
        with capped.runtime.store.read() as s:
            grant = s.exec(select(Grant)).one()
        assert grant.expires_at - grant.issued_at == timedelta(minutes=5)
        lease = backends.bao.client().sys.read_lease(grant.lease_id)["data"]
        assert lease["ttl"] <= 5 * 60
        assert any(
            "Vault allowed only 5 min of the 30 min" in t for t in thread_texts(slack, parent)
        )
        job = capped.runtime.scheduler.scheduler.get_job(f"expire:{request_id_of(parent)}")
        assert job.next_run_time == grant.expires_at
    finally:
        capped.stop()


@BOTH
def test_requester_can_cancel_a_pending_request(bot, slack):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    bot.driver.command(APPROVER, f"cancel {rid}")
    assert any("only the requester" in t for t in slack.ephemerals(APPROVER))
    assert request_row(bot, rid).state == State.PENDING
    bot.driver.command(REQUESTER, f"cancel #{rid}")
    assert request_row(bot, rid).state == State.CANCELLED
    assert any(f"#{rid} cancelled" in t for t in slack.ephemerals(REQUESTER))
    assert "Cancelled by" in thread_texts(slack, parent)[-1]
    assert bot.runtime.scheduler.scheduler.get_job(f"timeout:{rid}") is None
    click(bot, APPROVER, parent, ActionId.APPROVE)
    assert any("already cancelled" in t for t in slack.ephemerals(APPROVER))
    assert count_rows(bot, Grant) == 0


def test_raising_slack_sdk_to_debug_later_still_logs_no_secret(bot, slack, all_logs):
    import logging

    logging.getLogger("slack_sdk").setLevel(logging.DEBUG)
    logging.getLogger("slack_sdk.web.base_client").setLevel(logging.DEBUG)
    try:
        parent = request_access(bot, slack)
        click(bot, APPROVER, parent, ActionId.APPROVE)
        _, password = reveal(bot, slack)
        assert password not in "\n".join(r.getMessage() for r in all_logs.records)
    finally:
        logging.getLogger("slack_sdk.web.base_client").setLevel(logging.INFO)


@BOTH
def test_issue_interrupted_by_a_crash_is_failed_by_the_sweep(bot, slack, clock):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    # As if the process died between the approval and the credential: state "approved".
    with bot.runtime.store.transaction() as s:
        s.execute(text("UPDATE access_request SET state = 'approved' WHERE id = :id"), {"id": rid})
    assert bot.service.deadlines.sweep()["interrupted"] == 0, "not before it is clearly stuck"
    clock.advance(timedelta(minutes=6))
    assert bot.service.deadlines.sweep()["interrupted"] == 1
    assert request_row(bot, rid).state == State.FAILED
    assert any("interrupted" in m.text for m in slack.dms(REQUESTER))
    assert "Failed to issue" in str(current(slack, parent).blocks)


@BOTH
def test_two_replicas_sweeping_at_once_end_a_grant_once(
    bot, slack, backends, clock, database_url, tmp_path
):
    from bot.sandbox.stack import start_bot

    parent = request_access(bot, slack, duration="5m")
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    user, password = reveal(bot, slack)
    # No scheduler: its start-up sweep, run in its own thread, could end the grant before the
    # two sweeps below race for it.
    other = start_bot(
        backends, slack, database_url, clock=clock, workdir=tmp_path, start_scheduler=False
    )
    try:
        clock.advance(timedelta(minutes=5))
        barrier = threading.Barrier(2)
        results = []

        def sweep(replica) -> None:
            barrier.wait()
            results.append(replica.service.deadlines.sweep())

        threads = [threading.Thread(target=sweep, args=(b,)) for b in (bot, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r["expired"] for r in results) == [0, 1]
        assert all(r["failed"] == 0 for r in results)
        with bot.runtime.store.read() as s:
            ends = s.exec(select(AuditEvent).where(AuditEvent.action == "expired")).all()
            assert len(ends) == 1
            from bot.store import audit

            assert audit.verify(s).ok
        assert request_row(bot, rid).state == State.EXPIRED
        assert not backends.pg.can_login(user, password)
    finally:
        other.stop()


def test_requesters_limit_who_may_ask(backends, slack, clock, database_url, tmp_path):
    from bot.sandbox.stack import POLICY, start_bot

    policy = POLICY.replace(
        "  security: [U0CAROL]\n", "  security: [U0CAROL]\n  oncall: [U0ALICE]\n"
    ).replace("    emergency: true\n", "    emergency: true\n    requesters: [oncall]\n")
    limited = start_bot(
        backends, slack, database_url, policy_text=policy, clock=clock, workdir=tmp_path
    )
    try:
        # Alice (on call) sees prod-db; Mallory sees only the resource open to anyone.
        alice_view = open_modal(limited, slack, REQUESTER)
        options = [
            o["value"]
            for b in alice_view["blocks"]
            if b["block_id"] == BlockId.RESOURCE
            for o in b["element"]["options"]
        ]
        assert options == ["prod-db", "prod-db-two-keys"]
        mallory_view = open_modal(limited, slack, OUTSIDER)
        options = [
            o["value"]
            for b in mallory_view["blocks"]
            if b["block_id"] == BlockId.RESOURCE
            for o in b["element"]["options"]
        ]
        assert options == ["prod-db-two-keys"]
        # A submission naming prod-db anyway (a stale or crafted form) is refused inline.
        r = limited.driver.submit_view(
            OUTSIDER, alice_view, request_values("prod-db", "30m", "x" * 40)
        )
        assert "not among those who may ask" in r.json()["errors"][BlockId.RESOURCE]
        with limited.runtime.store.read() as s:
            assert s.exec(select(AccessRequest)).first() is None
    finally:
        limited.stop()
