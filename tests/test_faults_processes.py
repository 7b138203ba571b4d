"""The fault suite, real processes: two `breakglass serve` on one PostgreSQL racing for the
same request, and a `serve` killed (SIGKILL) mid-way and started again."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import hvac.exceptions
import pytest
from sqlmodel import Session, select

from bot.sandbox.slack_fake import FakeSlack, request_values, revealed
from bot.sandbox.stack import APPROVER, APPROVER_2, REQUESTER, SECURITY_CHANNEL, ServeProcess
from bot.slack.ids import ActionId, BlockId
from bot.store import AccessRequest, AuditEvent, Decision, Grant, OutboxEntry, audit
from bot.store import create_db_engine as engine_for
from tests.helpers import JUSTIFICATION, wait_for

# Real serve processes racing on real time: one worker runs every test that starts processes
# (this file and test_running.py), so none of them competes with another for the CPU.
pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("processes")]


@pytest.fixture(scope="module")
def shared_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture(scope="module")
def pair(backends, shared_slack, tmp_path_factory) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Two replicas of one bot sharing one PostgreSQL database (started once for the races
    below; each race uses requesters of its own)."""
    url = backends.pg.create_database("bg_pair")
    workdir = tmp_path_factory.mktemp("pair")
    a = ServeProcess(backends, shared_slack, workdir, database_url=url).start()
    b = a.replica()
    try:
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def rows(url: str, model, *where) -> list:
    engine = engine_for(url)
    try:
        with Session(engine) as s:
            return list(s.exec(select(model).where(*where)))
    finally:
        engine.dispose()


def backdate(url: str, model, column: str, by: timedelta) -> None:
    """Move `column` of every row `by` into the past: the process was down that long."""
    engine = engine_for(url)
    try:
        with Session(engine) as s:
            for row in s.exec(select(model)):
                setattr(row, column, getattr(row, column) - by)
                s.add(row)
            s.commit()
    finally:
        engine.dispose()


def at_once(*calls) -> None:
    """Run `calls` in threads released together, as two people clicking the same second."""
    gate = threading.Barrier(len(calls))
    results: list = []

    def run(call) -> None:
        gate.wait()
        results.append(call())

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(r.status_code == 200 for r in results), [r.status_code for r in results]


def file_request(served: ServeProcess, slack, user: str, resource: str):
    """`user` asks for `resource` through `served`; returns the status card as first posted."""
    before = len(slack.views_opened())
    assert served.driver.command(user).status_code == 200
    view = wait_for(lambda: len(slack.views_opened()) > before and slack.views_opened()[-1])
    r = served.driver.submit_view(user, view, request_values(resource, "15m", JUSTIFICATION))
    assert r.status_code == 200 and r.text == "", r.text
    url = served.database_url
    rid = wait_for(
        lambda: [q.id for q in rows(url, AccessRequest, AccessRequest.requester == user)]
    )
    return wait_for(
        lambda: next(
            (
                copy.deepcopy(m)
                for m in slack.channel_messages(SECURITY_CHANNEL)
                if m.thread_ts is None and f"#{rid[-1]}:" in m.text
            ),
            None,
        )
    )


def test_a_quorum_reached_by_simultaneous_clicks_on_two_replicas_approves_once(pair, shared_slack):
    a, b = pair
    slack = shared_slack
    url = a.database_url
    for round_ in range(4):
        requester = f"U0REQ{round_}X"
        card = file_request(a, slack, requester, "prod-db-two-keys")
        rid = rows(url, AccessRequest, AccessRequest.requester == requester)[0].id
        at_once(
            lambda: a.driver.click(APPROVER, card, ActionId.APPROVE),  # noqa: B023
            lambda: b.driver.click(APPROVER_2, card, ActionId.APPROVE),  # noqa: B023
        )
        wait_for(lambda: rows(url, AccessRequest, AccessRequest.id == rid)[0].state == "active")  # noqa: B023
        assert len(rows(url, Decision, Decision.request_id == rid)) == 2
        approved = rows(
            url, AuditEvent, AuditEvent.request_id == rid, AuditEvent.action == "approved"
        )
        assert len(approved) == 1, f"round {round_}: approved {len(approved)} times"
        assert len(rows(url, Grant, Grant.request_id == rid)) == 1
    with Session(engine_for(url)) as s:
        assert audit.verify(s).ok


def test_a_double_reveal_on_two_replicas_shows_it_once_and_alarms_nobody(
    pair, shared_slack, backends
):
    a, b = pair
    slack, url, who = shared_slack, a.database_url, "U0REVEALX"
    card = file_request(a, slack, who, "prod-db")
    rid = rows(url, AccessRequest, AccessRequest.requester == who)[0].id
    assert a.driver.click(APPROVER, card, ActionId.APPROVE).status_code == 200
    dm = wait_for(lambda: [m for m in slack.dms(who) if "vault unwrap" in str(m.blocks)])[0]
    wait_for(lambda: rows(url, Grant, Grant.request_id == rid)[0].delivered_at)
    opened = len(slack.views_opened())
    at_once(
        lambda: a.driver.click(who, dm, ActionId.REVEAL),
        lambda: b.driver.click(who, dm, ActionId.REVEAL),
    )
    views = wait_for(lambda: len(slack.views_opened()) >= opened + 1 and slack.views_opened())
    shown = wait_for(
        lambda: [f for v in views[opened:] if (f := revealed(slack, v["id"])) and "password" in f]
    )
    assert len(shown) == 1, "the credential was shown once"
    assert backends.pg.can_login(shown[0]["username"], shown[0]["password"])
    assert rows(url, AuditEvent, AuditEvent.action == "reveal_tamper") == []
    assert rows(url, AccessRequest, AccessRequest.id == rid)[0].state == "active"


def test_one_open_request_per_person_and_resource_across_replicas(pair, shared_slack):
    a, b = pair
    slack, who = shared_slack, "U0TWICEX"
    views = []
    for served in (a, b):
        n = len(slack.views_opened())
        served.driver.command(who)
        views.append(
            wait_for(lambda n=n: len(slack.views_opened()) > n and slack.views_opened()[-1])
        )
    values = request_values("prod-db", "15m", JUSTIFICATION)
    at_once(
        lambda: a.driver.submit_view(who, views[0], values),
        lambda: b.driver.submit_view(who, views[1], values),
    )
    mine = (AccessRequest.requester == who,)
    wait_for(lambda: rows(a.database_url, AccessRequest, *mine))
    assert len(rows(a.database_url, AccessRequest, *mine)) == 1


def test_a_crash_mid_issue_ends_with_the_child_revoked_and_the_request_failed(
    backends, slack, tmp_path, vault_proxy
):
    served = ServeProcess(backends, slack, tmp_path, vault_addr=vault_proxy.url).start()
    url = served.database_url
    try:
        card = file_request(served, slack, REQUESTER, "prod-db")
        vault_proxy.slow(1.5)  # issuing now takes seconds: time to crash in the middle
        assert served.driver.click(APPROVER, card, ActionId.APPROVE).status_code == 200
        grant = wait_for(lambda: (g := rows(url, Grant)) and g[0], timeout=20)
        assert rows(url, AccessRequest)[0].state == "approved", "killed before it was issued"
        served.kill()
        vault_proxy.restore()
        # The process stays down past the point where issuing is clearly interrupted.
        backdate(url, AccessRequest, "updated_at", timedelta(minutes=2))
        served.start()
        wait_for(lambda: rows(url, AccessRequest)[0].state == "failed", timeout=30)
        wait_for(lambda: rows(url, Grant)[0].ended_at, timeout=30)
        with pytest.raises(hvac.exceptions.InvalidRequest):
            backends.bao.client().auth.token.lookup_accessor(grant.token_accessor)
        wait_for(lambda: any("interrupted" in m.text for m in slack.dms(REQUESTER)), timeout=30)
    finally:
        served.stop()


def test_a_crash_before_the_dm_still_delivers_a_working_credential(backends, slack, tmp_path: Path):
    served = ServeProcess(backends, slack, tmp_path).start()
    url = served.database_url
    try:
        card = file_request(served, slack, REQUESTER, "prod-db")
        slack.hang("chat.postMessage", seconds=6, times=None)  # Slack is slow to answer...
        assert served.driver.click(APPROVER, card, ActionId.APPROVE).status_code == 200
        wait_for(lambda: rows(url, AccessRequest)[0].state == "active", timeout=20)
        served.kill()  # ...and the bot dies before the DM is confirmed
        slack.clear_faults()
        # The safety net's time came while it was down.
        backdate(url, OutboxEntry, "next_attempt_at", timedelta(minutes=2))
        served.start()
        grant = wait_for(lambda: (g := rows(url, Grant)[0]).delivered_at and g, timeout=40)
        latest = wait_for(
            lambda: [
                m
                for m in slack.dms(REQUESTER)
                if grant.identity
                and any(b.get("block_id") == BlockId.WRAPPED_TOKEN for b in m.blocks)
                and grant.identity in str(m.blocks)
            ],
            timeout=20,
        )[-1]
        opened = len(slack.views_opened())
        assert served.driver.click(REQUESTER, latest, ActionId.REVEAL).status_code == 200
        modal = wait_for(lambda: len(slack.views_opened()) > opened and slack.views_opened()[-1])
        fields = wait_for(
            lambda: revealed(slack, modal["id"]).get("password") and revealed(slack, modal["id"])
        )
        assert backends.pg.can_login(fields["username"], fields["password"])
    finally:
        served.stop()
