"""Tier 2: the service against a real SQLite store when Vault misbehaves in ways a real server
will not on demand (sealed, forbidden, slow, garbage), injected with `responses`; and a real
OpenBao that goes away mid-grant."""

from __future__ import annotations

from pathlib import Path

import hvac
import pytest
import requests
import responses
from sqlmodel import select

from bot import migrate
from bot.domain.forms import RequestForm
from bot.domain.notices import Notice
from bot.domain.workflow import Event, Refused, State
from bot.policy import parse_policy
from bot.sandbox.stack import APPROVER, POLICY, REQUESTER
from bot.slack.notifier import notice_text
from bot.store import AuditEvent, Grant, Store, audit, create_db_engine
from bot.usecases import Breakglass, Card
from providers import VaultBackend
from tests.helpers import JUSTIFICATION, click, credential_dm, request_access, request_id_of

VAULT = "http://vault.test:8200"


class RecordingNotifier:
    """Stands in for Slack at the Notifier boundary; keeps what people would have been told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, str]] = []
        self.events: list[tuple[Event, str]] = []
        self.delivered: list[str] = []

    def open_thread(self, card: Card) -> tuple[str, str]:
        return "C0SECURITY", "1.000001"

    def record(self, card: Card, event: Event, actor: str, note: str = "") -> None:
        self.events.append((event, note))

    def tell(self, user: str, notice: Notice) -> None:
        self.told.append((user, notice_text(notice)))

    def deliver(self, card: Card, wrapping_token: str) -> tuple[str, str]:
        self.delivered.append(wrapping_token)
        return "D0ALICE", "2.000001"

    def update_credential(self, card: Card) -> None:
        pass

    def alert(self, card: Card | None, notice: Notice) -> None:
        self.events.append((Event.REVEAL_TAMPER, notice_text(notice)))


@pytest.fixture
def service(tmp_path: Path) -> Breakglass:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'faults.db'}")
    migrate.upgrade(engine)
    backend = VaultBackend(hvac.Client(url=VAULT, token="hvs.bot-token", timeout=2))
    return Breakglass(Store(engine), parse_policy(POLICY), backend, RecordingNotifier())


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
    told = [t for u, t in service.notifier.told if u == REQUESTER]
    assert any(words in t and "could not be issued" in t for t in told), told
    assert all("Traceback" not in t for _, t in service.notifier.told)
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
    assert service.card(rid).state == State.FAILED
    assert revoked.call_count == 1
    assert b"acc-child-1" in responses.calls[-1].request.body
    assert "hvs.child" not in str(service.notifier.told)


def test_revocation_while_vault_is_away_keeps_the_grant_active_for_a_retry(bot, slack, backends):
    parent = request_access(bot, slack)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, "breakglass.grant.approve")
    real = bot.runtime.backend.client
    bot.runtime.backend.client = hvac.Client(url="http://127.0.0.1:9", token="x", timeout=2)
    with pytest.raises(Refused, match="cannot reach Vault"):
        bot.service.grants.revoke(rid, REQUESTER)
    assert bot.service.card(rid).state == State.ACTIVE
    with bot.runtime.store.read() as s:
        assert s.exec(select(AuditEvent).where(AuditEvent.action == "revoke_failed")).first()
    bot.runtime.backend.client = real
    click(bot, REQUESTER, credential_dm(slack), "breakglass.credential.revoke")
    assert bot.service.card(rid).state == State.REVOKED
    with bot.runtime.store.read() as s:
        assert s.exec(select(Grant)).one().end_reason == "revoked"
