"""Tier 3: the audit trail an auditor reads. Secrets pasted into free text never reach Slack, a
log line, a table or an export; every event says who, what, when, on which resource, the
decision and what the system did; `breakglass audit show` prints one request's trail."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from bot.domain.workflow import State
from bot.sandbox.slack_fake import FakeSlack, Message, deny_values, review_values
from bot.sandbox.stack import APPROVER, APPROVER_2, REQUESTER, SECURITY_CHANNEL, Bot
from bot.slack.ids import ActionId, BlockId, ViewId
from bot.store import AuditEvent, audit
from tests.helpers import (
    click,
    credential_dm,
    current,
    request_access,
    request_id_of,
    request_row,
    reveal,
    thread_texts,
)

BREAKGLASS = str(Path(sys.executable).parent / "breakglass")

# What a responder in a hurry pastes: a Vault token, an AWS key pair, a connection string;
# each field its own, so that each is shown to be masked where it was typed.
HVS = "hvs.CAESIP2jTxc9S2K7Z9ZbGqzF0yA1RrV1w6fNq6QeVbEQmzx8GiQKHGh2cy5aTjBSU3RqRlhXUEtTaHJqZTRqc2Y"
AWS_ID = "AKIAQ3EGRH7XJ2KLM4NP"
AWS_SECRET = "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"
PG_PASSWORD = "Tr0ub4dor-3x-Orders"
TICKET_PASSWORD = "Sn0wfl4ke!Ticket"
LEGACY = "s.Qm3xT8vR2kW9pL4nZ7yH1cJ6"
DENY_ID = "ASIAZX4QW7ER2TY6UI8O"
DENY_SECRET = "Lq8/Wz3+Xv5Ty7Nm2Kp4Rs6Ub9Cd1Ef3Gh5Ij7Kw"
NOTES_PASSWORD = "R3v13w-N0tes-pw"
NOTES_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
SECRETS = [
    HVS,
    AWS_ID,
    AWS_SECRET,
    PG_PASSWORD,
    TICKET_PASSWORD,
    LEGACY,
    DENY_ID,
    DENY_SECRET,
    NOTES_PASSWORD,
    NOTES_TOKEN,
]
JUSTIFICATION = (
    f"Orders DB down. I tried VAULT_TOKEN={HVS} and the AWS pair {AWS_ID} {AWS_SECRET}; "
    f"the app connects with postgres://app:{PG_PASSWORD}@db.internal:5432/orders"
)
TICKET = f"INC-1234 postgres://svc:{TICKET_PASSWORD}@db/orders {LEGACY}"
DENY_REASON = f"Never paste keys such as {DENY_ID} {DENY_SECRET} here; use the replica."
NOTES = f"Requester pasted mysql://root:{NOTES_PASSWORD}@db/x and {NOTES_TOKEN}; rotate both."


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `breakglass` command, as an operator runs it."""
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [BREAKGLASS, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def every_text_in_the_database(bot: Bot) -> str:
    """Every column of every row of every table, as text."""
    engine = bot.runtime.store.engine
    dump = []
    with engine.connect() as c:
        for table in sa.inspect(engine).get_table_names():
            rows = c.execute(sa.text(f'SELECT * FROM "{table}"')).fetchall()  # noqa: S608
            dump.append(f"{table}: {rows!r}")
    return "\n".join(dump)


def every_log_line(records: list[logging.LogRecord]) -> str:
    """The records as a handler writes them (exception text and stack included)."""
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    return "\n".join(formatter.format(r) + repr(r.args) for r in records)


def review_button(slack: FakeSlack, parent: Message) -> Message:
    return next(
        m
        for m in slack.thread(parent.channel, parent.ts)
        if any(b.get("block_id") == BlockId.REVIEW_ACTIONS for b in m.blocks)
    )


def masked_notices(slack: FakeSlack, user: str) -> list[str]:
    return [m.text for m in slack.dms(user) if "was masked before" in m.text]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_pasted_secrets_never_reach_slack_logs_tables_or_export(bot, slack, all_logs, database_url):
    # A request with secrets in its justification and ticket, denied with a reason that holds
    # a key pair: everything shown is masked, and the request still files.
    denied = request_access(
        bot, slack, resource="prod-db-two-keys", justification=JUSTIFICATION, ticket=TICKET
    )
    card = str(current(slack, denied).blocks)
    assert "VAULT_TOKEN=[redacted vault-token]" in card
    assert "[redacted aws-access-key-id] [redacted aws-secret-key]" in card
    assert "postgres://app:[redacted password]@db.internal:5432/orders" in card
    assert "INC-1234 postgres://svc:[redacted password]@db/orders" in card
    (told,) = masked_notices(slack, REQUESTER)
    assert "the justification and the ticket" in told and "a Vault token" in told
    assert "rotate it" in told
    click(bot, APPROVER, denied, ActionId.DENY)
    deny_view = slack.views_opened()[-1]
    assert deny_view["callback_id"] == ViewId.DENY
    r = bot.driver.submit_view(APPROVER, deny_view, deny_values(DENY_REASON))
    assert r.status_code == 200 and r.text == ""
    assert request_row(bot, request_id_of(denied)).state == State.DENIED
    assert "Never paste keys such as [redacted aws-access-key-id]" in str(
        current(slack, denied).blocks
    )
    assert any("the deny reason" in t for t in masked_notices(slack, APPROVER))

    # An emergency access with the same paste, ended, and reviewed with notes that hold more.
    emergency = request_access(bot, slack, emergency=True, justification=JUSTIFICATION)
    rid = request_id_of(emergency)
    reveal(bot, slack)
    click(bot, REQUESTER, credential_dm(slack), ActionId.REVOKE)
    assert request_row(bot, rid).state == State.REVOKED
    click(bot, APPROVER, review_button(slack, emergency), ActionId.REVIEW)
    review_view = slack.views_opened()[-1]
    assert review_view["callback_id"] == ViewId.REVIEW
    r = bot.driver.submit_view(APPROVER, review_view, review_values("needs_follow_up", NOTES))
    assert r.status_code == 200 and r.text == ""
    assert any("mysql://root:[redacted password]@db/x" in t for t in thread_texts(slack, emergency))
    assert any("the review notes" in t for t in masked_notices(slack, APPROVER))

    # The audit trail says what was masked, never what it was.
    with bot.runtime.store.read() as s:
        requested = s.exec(
            select(AuditEvent).where(
                AuditEvent.request_id == request_id_of(denied), AuditEvent.action == "requested"
            )
        ).one()
        assert audit.verify(s).ok
    masked = json.loads(requested.details)["masked"]
    assert {k: set(v) for k, v in masked.items()} == {
        "justification": {"vault-token", "password", "aws-secret-key", "aws-access-key-id"},
        "ticket": {"password", "vault-token"},
    }

    # Nowhere: not in any call to Slack, any log record at DEBUG, any table, any export.
    sent = slack.everything_sent()
    logged = every_log_line(all_logs.records)
    assert all_logs.records, "logging was captured"
    stored = every_text_in_the_database(bot)
    exported = cli(database_url, "audit", "export")
    assert exported.returncode == 0, exported.stderr
    assert "[redacted vault-token]" in exported.stdout
    shown = cli(database_url, "audit", "show", str(rid))
    assert shown.returncode == 0, shown.stderr
    assert "notes: Requester pasted mysql://root:[redacted password]@db/x" in shown.stdout
    for secret in SECRETS:
        assert secret not in sent, secret
        assert secret not in logged, secret
        assert secret not in stored, secret
        assert secret not in exported.stdout + exported.stderr, secret
        assert secret not in shown.stdout + shown.stderr, secret


def test_a_library_error_that_carries_a_pasted_secret_logs_it_masked(bot, all_logs):
    """Socket Mode: a listener that fails on a payload gets slack_sdk to log the error at ERROR
    (not DEBUG, so quieting the libraries does not help); the record is masked when made."""
    from slack_sdk import WebClient
    from slack_sdk.socket_mode.builtin.client import SocketModeClient

    client = SocketModeClient(
        app_token="xapp-1-sandbox", web_client=WebClient(base_url="http://127.0.0.1:9/")
    )

    def failing(_client: object, message: dict, _raw: str) -> None:
        raise ValueError(f"cannot handle {message['payload']['justification']}")

    client.message_listeners.append(failing)
    message = {"envelope_id": "e1", "type": "view_submission", "payload": {"justification": HVS}}
    try:
        client.run_message_listeners(message, json.dumps(message))
    finally:
        client.close()
    logged = every_log_line(all_logs.records)
    assert "Failed to run a message listener: cannot handle [redacted vault-token]" in logged
    assert "ValueError" in logged  # the traceback is there, masked
    assert HVS not in logged


@pytest.mark.xdist_group("processes")  # a process of its own, as in tests/test_running.py
def test_gunicorns_access_log_is_masked(backends, slack, tmp_path):
    """gunicorn's access lines go through the root's handler (`bot.server.GunicornLog`):
    the path masked, the query string never written."""
    import requests

    from bot.sandbox.stack import ServeProcess

    served = ServeProcess(backends, slack, tmp_path, extra_env={"LOG_FORMAT": "json"}).start()
    try:
        r = requests.get(f"{served.url}/x?vault_token={LEGACY}&key={AWS_ID}", timeout=10)
        assert r.status_code == 404
        assert requests.get(f"{served.url}/{LEGACY}", timeout=10).status_code == 404
    finally:
        served.stop()
    log = served.log_text()
    lines = [json.loads(line) for line in log.splitlines() if '"gunicorn.access"' in line]
    assert [(x["message"].rsplit(" ", 2)[0], x["path"]) for x in lines] == [
        ("GET /x 404", "/x"),
        ("GET /[redacted vault-token] 404", "/[redacted vault-token]"),
    ]
    assert LEGACY not in log and AWS_ID not in log


# ---- complete events, and `audit show` ---------------------------------------------------


def _details(bot: Bot, rid: int) -> list[tuple[str, str, dict]]:
    with bot.runtime.store.read() as s:
        events = s.exec(
            select(AuditEvent).where(AuditEvent.request_id == rid).order_by(AuditEvent.seq)
        ).all()
    return [(e.action, e.actor, json.loads(e.details)) for e in events]


def test_every_event_names_its_resource_the_decision_and_the_response(bot, slack, backends):
    # Two approvals; then an emergency; then a credential unwrapped by someone else.
    two = request_access(bot, slack, resource="prod-db-two-keys", duration="10m")
    click(bot, APPROVER, two, ActionId.APPROVE)
    click(bot, APPROVER_2, two, ActionId.APPROVE)
    trail = _details(bot, request_id_of(two))
    assert all(d["resource"] == "prod-db-two-keys" for _, _, d in trail)
    who, recorded = next((who, d) for a, who, d in trail if a == "approval_recorded")
    assert who == APPROVER and recorded["decision"] == "approve"
    assert (recorded["approvals"], recorded["needed"]) == (1, 2)
    who, approved = next((who, d) for a, who, d in trail if a == "approved")
    assert who == APPROVER_2 and approved["decision"] == "approve"
    assert approved["approvers"] == sorted([APPROVER, APPROVER_2])
    issued = next(d for a, _, d in trail if a == "issued")
    assert issued["token_accessor"] and issued["lease_id"] and issued["identity"]
    requested = next(d for a, _, d in trail if a == "requested")
    assert requested["justification"].startswith("Checkout is down")
    assert "flags" in requested and "masked" not in requested

    emergency = request_access(bot, slack, emergency=True)
    trail = _details(bot, request_id_of(emergency))
    override = next((who, d) for a, who, d in trail if a == "emergency_access")
    assert override[0] == REQUESTER
    assert override[1]["override"] == "emergency_self_approval"
    assert override[1]["alerted"] == [SECURITY_CHANNEL]
    assert all(d["resource"] == "prod-db" for _, _, d in trail)

    from bot.slack.credential.blocks import wrapped_token_from

    token = wrapped_token_from({"blocks": credential_dm(slack).blocks})
    backends.bao.client(token).sys.unwrap()
    click(bot, REQUESTER, credential_dm(slack), ActionId.REVEAL)
    assert request_row(bot, request_id_of(emergency)).state == State.REVOKED
    trail = _details(bot, request_id_of(emergency))
    tamper = next(d for a, _, d in trail if a == "reveal_tamper")
    assert tamper["alerted"] == [SECURITY_CHANNEL] and tamper["response"] == "access revoked"
    ending = next(d for a, _, d in trail if a == "ending")
    revoked = next((who, d) for a, who, d in trail if a == "revoked")
    assert ending["override"] == revoked[1]["override"] == "tamper_revoke"
    assert revoked[0] == "breakglass"


def test_audit_show_prints_one_requests_trail_with_its_hashes(bot, slack, database_url):
    request_access(bot, slack, resource="prod-db-two-keys", duration="10m")
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    reveal(bot, slack)
    click(bot, REQUESTER, credential_dm(slack), ActionId.REVOKE)

    shown = cli(database_url, "audit", "show", f"#{rid}")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    head, *blocks = out.split("\n\n")
    assert head.splitlines()[:2] == [
        f"Request #{rid}: prod-db, requested by {REQUESTER}",
        "State: revoked",
    ]
    assert "Justification: Checkout is down" in head and "Ticket: INC-4711" in head
    exported = [
        json.loads(line) for line in cli(database_url, "audit", "export").stdout.splitlines()
    ]
    mine = [e for e in exported if e["request_id"] == rid]
    assert len(blocks) == len(mine) >= 7
    assert f"Events: {len(mine)}" in head
    for block, event in zip(blocks, mine, strict=True):
        lines = block.splitlines()
        assert lines[0].startswith(f"[{event['seq']}] ")
        assert lines[0].endswith(f"  {event['action']}  by {event['actor']}")
        assert " UTC" in lines[0]
        assert f"    prev hash: {event['prev_hash']}" in lines
        assert f"    hash: {event['hash']}" in lines
        assert "    resource: prod-db" in lines
    assert [b.splitlines()[0].split()[4] for b in blocks][:3] == [
        "requested",
        "approved",
        "issued",
    ]
    assert "    decision: approve" in blocks[1].splitlines()
    assert f"    approvers: {APPROVER}" in blocks[1].splitlines()
    assert "prod-db-two-keys" not in out  # the other request's events are not part of it

    missing = cli(database_url, "audit", "show", "999")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().splitlines()[-1] == "no request #999 in this database"
    bad = cli(database_url, "audit", "show", "twelve")
    assert bad.returncode == 2 and "not a request id" in bad.stderr
    assert "Traceback" not in missing.stderr + bad.stderr
