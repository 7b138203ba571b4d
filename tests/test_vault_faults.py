"""Tier 2: the service against a real SQLite store when Vault misbehaves in ways a real server
will not on demand (sealed, forbidden, slow, garbage), injected with `responses`; and a real
OpenBao that goes away mid-grant."""

from __future__ import annotations

import json
from pathlib import Path

import hvac
import pytest
import requests
import responses
from sqlmodel import select

from bot import migrate
from bot.domain.forms import RequestForm
from bot.domain.notices import Notice
from bot.domain.workflow import State
from bot.policy import parse_policy
from bot.sandbox.stack import APPROVER, POLICY, REQUESTER
from bot.slack.notifier import notice_text
from bot.store import AuditEvent, Grant, OutboxEntry, Store, audit, create_db_engine
from bot.usecases import Breakglass, Card
from providers import VaultBackend
from tests.helpers import JUSTIFICATION, click, request_access, request_id_of, wait_for

VAULT = "http://vault.test:8200"


class RecordingCourier:
    """Stands in for Slack's credential DM; keeps the wrapping tokens it was handed."""

    def __init__(self) -> None:
        self.delivered: list[str] = []

    def deliver(self, card: Card, wrapping_token: str) -> tuple[str, str]:
        self.delivered.append(wrapping_token)
        return "D0ALICE", "2.000001"


def told(service: Breakglass) -> list[tuple[str, str]]:
    """What people are owed being told: the outbox's direct messages, as Slack would show."""
    with service.store.read() as s:
        rows = s.exec(select(OutboxEntry).where(OutboxEntry.kind == "dm")).all()
    return [
        (
            json.loads(r.payload)["user"],
            notice_text(Notice.from_json(json.loads(r.payload)["notice"])),
        )
        for r in rows
    ]


@pytest.fixture
def service(tmp_path: Path) -> Breakglass:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'faults.db'}")
    migrate.upgrade(engine)
    backend = VaultBackend(hvac.Client(url=VAULT, token="hvs.bot-token", timeout=2))
    return Breakglass(Store(engine), parse_policy(POLICY), backend, RecordingCourier())


def submit_and_approve(service: Breakglass) -> int:
    req = service.requests.submit(REQUESTER, RequestForm("prod-db", "30m", JUSTIFICATION, "INC-1"))
    service.requests.approve(req.id, APPROVER)
    return req.id


def fail_token_create(**kwargs) -> None:
    responses.add(responses.POST, f"{VAULT}/v1/auth/token/create", **kwargs)


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"status": 503, "json": {"errors": ["Vault is sealed"]}}, "sealed"),
        ({"status": 403, "json": {"errors": ["permission denied"]}}, "permission denied"),
        ({"body": requests.ConnectTimeout("slow")}, "did not answer in time"),
        ({"status": 200, "body": "<html>proxy error</html>"}, "unreadable answer"),
        ({"status": 500, "json": {"errors": ["internal error"]}}, "internal error"),
    ],
)
@responses.activate
def test_issue_failure_is_recorded_and_explained(service, fault, words):
    fail_token_create(**fault)
    rid = submit_and_approve(service)
    card = service.card(rid)
    assert card.state == State.FAILED
    assert card.grant is None
    said = [t for u, t in told(service) if u == REQUESTER]
    assert any(words in t and "could not be issued" in t for t in said), said
    assert all("Traceback" not in t for _, t in told(service))
    with service.store.read() as s:
        actions = [e.action for e in s.exec(select(AuditEvent).order_by(AuditEvent.seq))]
        assert actions == ["requested", "approved", "issue_failed"]
        assert audit.verify(s).ok


@responses.activate
def test_failure_after_the_child_token_revokes_it(service):
    responses.add(
        responses.POST,
        f"{VAULT}/v1/auth/token/create",
        json={
            "auth": {
                "client_token": "hvs.child",
                "accessor": "acc-child-1",
                "lease_duration": 1800,
            }
        },
    )
    responses.add(
        responses.GET,
        f"{VAULT}/v1/database/creds/breakglass-rw",
        status=500,
        json={"errors": ["connection to the database refused"]},
    )
    revoked = responses.add(responses.POST, f"{VAULT}/v1/auth/token/revoke-accessor", status=204)
    rid = submit_and_approve(service)
    card = service.card(rid)
    assert card.state == State.FAILED
    # Intent first: the accessor was stored before the read, and the revocation is done.
    assert card.grant is not None and card.grant.token_accessor == "acc-child-1"
    assert card.grant.ended_at is not None
    assert revoked.call_count >= 1
    assert all(
        b"acc-child-1" in c.request.body for c in responses.calls if "revoke" in c.request.url
    )
    assert "hvs.child" not in str(told(service))


def test_revocation_while_vault_is_away_is_retried_until_vault_confirms(bot, slack, backends):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, "breakglass.grant.approve")
    real = bot.runtime.backend.client
    bot.runtime.backend.client = hvac.Client(url="http://127.0.0.1:9", token="x", timeout=2)
    assert bot.service.grants.revoke(rid, REQUESTER) is False, "pending, not done"
    assert bot.service.card(rid).state == State.ENDING
    with bot.runtime.store.read() as s:
        assert s.exec(select(AuditEvent).where(AuditEvent.action == "revoke_failed")).first()
    bot.runtime.backend.client = real
    # Nobody clicks again: the retry timer ends it once Vault answers.
    wait_for(lambda: bot.service.card(rid).state == State.REVOKED, timeout=10)
    with bot.runtime.store.read() as s:
        grant = s.exec(select(Grant)).one()
        assert grant.end_reason == "revoked" and grant.ended_at is not None
        failed = s.exec(select(AuditEvent).where(AuditEvent.action == "revoke_failed")).all()
        assert len(failed) == 1, "one notice when it starts failing"
