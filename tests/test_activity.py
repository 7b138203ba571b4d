"""What the access was used for (pg_stat_statements, read when a grant ends) and the join with
Vault's audit log (the HMACs of each grant's accessor and lease): the whole bot against the
real OpenBao, its file audit device, and the real PostgreSQL."""

from __future__ import annotations

import json
import logging
import socket
from datetime import timedelta

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlmodel import select

from bot.domain.activity import TIMES, StatementStat, classify, summarize
from bot.domain.workflow import Event, State
from bot.policy import PolicyError, parse_policy
from bot.preflight import required_capabilities
from bot.sandbox.openbao import AUDIT_DEVICE, MONITOR_ROLE
from bot.sandbox.stack import APPROVER, POLICY, REQUESTER, start_bot
from bot.slack.ids import ActionId
from bot.store import AuditEvent, Grant
from tests.helpers import (
    click,
    credential_dm,
    request_access,
    request_id_of,
    request_row,
    reveal,
    wait_for,
)
from tests.test_vault_edge import check_config

# The bot on both stores it supports.
# Both stores where the end path's transactions are the point; the rest reads the monitored
# database the same way whatever the bot's own store is, and runs on SQLite.
BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

BROKEN_MONITOR = "no-such-monitor"
ACTIVITY_POLICY = (
    POLICY.replace(
        "    emergency: true\n",
        f"    emergency: true\n    activity: {{monitor_role: {MONITOR_ROLE}}}\n",
        1,
    )
    + f"""\
  broken-monitor-db:
    description: Production PostgreSQL, whose monitoring role is missing from Vault
    provider: vault-database
    options: {{mount: database, role: breakglass-rw}}
    approvers: [sre-leads]
    activity: {{monitor_role: {BROKEN_MONITOR}}}
audit:
  vault_device: {AUDIT_DEVICE}
"""
)
# Literals the grant's user types; none may appear anywhere the bot writes.
LITERALS = ("lit-alpha-7731", "lit-bravo-4410", "lit-charlie-9052", "lit-delta-5521")


@pytest.fixture
def abot(backends, slack, clock, database_url, tmp_path):
    b = start_bot(
        backends, slack, database_url, clock=clock, workdir=tmp_path, policy_text=ACTIVITY_POLICY
    )
    yield b
    b.stop()


@pytest.fixture(scope="module")
def incidents(backends) -> str:
    """A table the grants' users may read and write, made as the database's owner would."""
    with psycopg.connect(backends.pg.url(), autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS incidents (id int PRIMARY KEY, state text)")
        c.execute("INSERT INTO incidents VALUES (1, 'open') ON CONFLICT DO NOTHING")
        c.execute("GRANT SELECT, UPDATE ON incidents TO PUBLIC")
    return "incidents"


def granted(bot, slack, resource: str = "prod-db") -> tuple[int, str, str]:
    parent = request_access(bot, slack, resource=resource)
    rid = request_id_of(parent)
    click(bot, APPROVER, parent, ActionId.APPROVE)
    user, password = reveal(bot, slack)
    return rid, user, password


def events(bot, rid: int, action: Event) -> list[AuditEvent]:
    with bot.runtime.store.read() as s:
        return list(
            s.exec(
                select(AuditEvent)
                .where(AuditEvent.request_id == rid, AuditEvent.action == action.value)
                .order_by(AuditEvent.seq)
            ).all()
        )


def everything_stored(bot) -> str:
    """Every row of every table of the bot's database, as text."""
    tables = sa.MetaData()
    tables.reflect(bot.runtime.store.engine)
    with bot.runtime.store.engine.connect() as c:
        return "\n".join(
            str(row) for table in tables.sorted_tables for row in c.execute(sa.select(table))
        )


@BOTH
def test_activity_of_a_used_grant_is_recorded_and_posted_without_literals(
    abot, slack, backends, incidents, caplog
):
    caplog.set_level(logging.DEBUG)
    rid, user, password = granted(abot, slack)
    with psycopg.connect(backends.pg.url(user, password), autocommit=True) as c:
        # Literals inline in the text sent, so that hiding them is PostgreSQL's doing.
        for literal in LITERALS[:3]:
            c.execute(
                sql.SQL("SELECT * FROM incidents WHERE state = {}").format(sql.Literal(literal))
            )
        c.execute(
            sql.SQL("UPDATE incidents SET state = {} WHERE id = 1").format(sql.Literal(LITERALS[3]))
        )
    click(abot, REQUESTER, credential_dm(slack), ActionId.REVOKE)
    assert request_row(abot, rid).state == State.REVOKED
    assert not backends.pg.can_login(user, password)

    (event,) = events(abot, rid, Event.ACTIVITY)
    details = json.loads(event.details)
    summary = f"4 statements: SELECT incidents {TIMES}3, UPDATE incidents {TIMES}1"
    assert details["summary"] == summary
    assert details["identity"] == user
    queries = {st["query"]: st["calls"] for st in details["statements"]}
    assert queries == {
        "SELECT * FROM incidents WHERE state = $1": 3,
        "UPDATE incidents SET state = $1 WHERE id = $2": 1,
    }
    # Read before the user was dropped, recorded with the end, before the end's own event.
    (revoked,) = events(abot, rid, Event.REVOKED)
    assert event.seq < revoked.seq
    replies = [m.text for m in slack.thread(*_thread(abot, rid))]
    assert any(f"What `{user}` ran: {summary}" in t for t in replies), replies
    # The monitoring user that read it was revoked right after (Vault dropped it).
    assert details["monitor"] not in _monitor_users_left(backends)
    assert not backends.pg.can_login(details["monitor"], "x")

    everywhere = everything_stored(abot) + slack.everything_sent() + caplog.text
    for literal in LITERALS:
        assert literal not in everywhere
    # The password itself was shown once, in the reveal modal; nowhere else.
    assert password not in everything_stored(abot) + caplog.text


def test_a_grant_never_used_says_so(abot, slack, backends, incidents):
    rid, user, _ = granted(abot, slack)
    click(abot, REQUESTER, credential_dm(slack), ActionId.REVOKE)
    (event,) = events(abot, rid, Event.ACTIVITY)
    assert json.loads(event.details)["summary"] == "credential never used"
    replies = [m.text for m in slack.thread(*_thread(abot, rid))]
    assert any(f"What `{user}` ran: credential never used" in t for t in replies)


def test_a_broken_monitor_role_is_recorded_and_the_grant_still_ends(abot, slack, backends):
    rid, user, password = granted(abot, slack, resource="broken-monitor-db")
    click(abot, REQUESTER, credential_dm(slack), ActionId.REVOKE)
    assert request_row(abot, rid).state == State.REVOKED
    assert not backends.pg.can_login(user, password)
    (event,) = events(abot, rid, Event.ACTIVITY)
    summary = json.loads(event.details)["summary"]
    assert summary.startswith("activity unavailable: ")
    assert f"database/roles/{BROKEN_MONITOR} does not exist" in summary
    replies = [m.text for m in slack.thread(*_thread(abot, rid))]
    assert any("activity unavailable" in t for t in replies)


@BOTH
def test_grants_expiring_together_share_one_monitoring_read(
    abot, slack, backends, clock, incidents
):
    first, user1, pw1 = granted(abot, slack)
    parent = request_access(abot, slack, user=APPROVER)  # anyone may ask; another person
    second = request_id_of(parent)
    click(abot, "U0CAROL", parent, ActionId.APPROVE)
    with psycopg.connect(backends.pg.url(user1, pw1), autocommit=True) as c:
        c.execute("SELECT count(*) FROM incidents")
    reads_before = _monitor_reads(backends)
    clock.advance(timedelta(hours=1))
    assert abot.service.grants.expire_many([first, second]) == {first, second}
    assert _monitor_reads(backends) == reads_before + 1
    (one,) = events(abot, first, Event.ACTIVITY)
    (two,) = events(abot, second, Event.ACTIVITY)
    assert json.loads(one.details)["summary"] == f"1 statement: SELECT incidents {TIMES}1"
    assert json.loads(two.details)["summary"] == "credential never used"


@BOTH
def test_grant_records_the_vault_audit_hmacs_that_find_it_in_vaults_audit_log(
    abot, slack, backends
):
    rid, _, _ = granted(abot, slack)
    with abot.runtime.store.read() as s:
        grant = s.exec(select(Grant).where(Grant.request_id == rid)).one()
    assert grant.accessor_hmac and grant.accessor_hmac.startswith("hmac-sha256:")
    assert grant.lease_hmac and grant.lease_hmac.startswith("hmac-sha256:")
    (issued,) = events(abot, rid, Event.ISSUED)
    details = json.loads(issued.details)
    assert details["accessor_hmac"] == grant.accessor_hmac
    assert details["lease_hmac"] == grant.lease_hmac
    assert details["vault_audit_device"] == AUDIT_DEVICE

    click(abot, REQUESTER, credential_dm(slack), ActionId.REVOKE)
    log = backends.bao.audit_entries()
    # Every request the grant's child token made carries its accessor's HMAC...
    by_token = [e for e in log if e.get("auth", {}).get("accessor") == grant.accessor_hmac]
    paths = {e["request"]["path"] for e in by_token if e["type"] == "request"}
    assert "database/creds/breakglass-rw" in paths and "sys/wrapping/wrap" in paths
    # ...and the lease's HMAC finds its renewal (shortened to the grant) and its revocation.
    by_lease = [
        e["request"]["path"]
        for e in log
        if e["type"] == "request"
        and (e["request"].get("data") or {}).get("lease_id") == grant.lease_hmac
    ]
    assert "sys/leases/renew" in by_lease and "sys/leases/revoke" in by_lease
    # The token's revocation by accessor, by the bot: the same HMAC in the request's data.
    assert any(
        e["request"]["path"] == "auth/token/revoke-accessor"
        and (e["request"].get("data") or {}).get("accessor") == grant.accessor_hmac
        for e in log
        if e["type"] == "request"
    )


def test_an_audit_hash_refused_leaves_the_hmacs_unknown_and_issues_anyway(
    backends, slack, clock, database_url, tmp_path, caplog
):
    policy = POLICY + "audit:\n  vault_device: not-allowed-device\n"
    b = start_bot(backends, slack, database_url, clock=clock, workdir=tmp_path, policy_text=policy)
    try:
        rid, user, password = granted(b, slack)
        assert request_row(b, rid).state == State.ACTIVE
        assert backends.pg.can_login(user, password)
        with b.runtime.store.read() as s:
            grant = s.exec(select(Grant).where(Grant.request_id == rid)).one()
        assert grant.accessor_hmac is None and grant.lease_hmac is None
        details = json.loads(events(b, rid, Event.ISSUED)[0].details)
        assert details["accessor_hmac"] is None
        assert "sys/audit-hash/not-allowed-device" in details["vault_audit_error"]
        assert "Vault audit HMACs" in caplog.text
    finally:
        b.stop()


def _thread(bot, rid: int) -> tuple[str, str]:
    row = request_row(bot, rid)
    assert row.channel and row.thread_ts
    return row.channel, row.thread_ts


def _monitor_reads(backends) -> int:
    return sum(
        1
        for e in backends.bao.audit_entries()
        if e["type"] == "request" and e["request"]["path"] == f"database/creds/{MONITOR_ROLE}"
    )


# ---- the policy and check-config ------------------------------------------------------------


def test_bad_activity_and_audit_settings_are_refused_with_their_line():
    text = (
        POLICY.replace(
            "    emergency: true\n",
            "    emergency: true\n"
            '    activity: {monitor_role: m, dsn: "host=db user=bob password=hunter2"}\n',
            1,
        ).replace(
            "    emergency: false\n",
            "    emergency: false\n    activity: {monitor: m}\n",
            1,
        )
        + "audit:\n  vault_device: 'not a path'\n"
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "breakglass.yml")
    lines = [str(p) for p in caught.value.problems]
    assert any(
        line.startswith("breakglass.yml:14: resources.prod-db.activity.dsn: holds password, user")
        for line in lines
    ), lines
    assert "hunter2" not in "\n".join(lines)
    assert any(
        line.startswith("breakglass.yml:23: resources.prod-db-two-keys.activity.monitor:")
        for line in lines
    ), lines
    assert any(line.startswith("breakglass.yml:25: audit.vault_device:") for line in lines), lines


def test_activity_is_refused_for_other_providers():
    text = POLICY.replace("provider: vault-database\n", "provider: vault-kv\n", 1).replace(
        "    emergency: true\n", "    emergency: true\n    activity: {monitor_role: m}\n", 1
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "breakglass.yml")
    assert (
        "breakglass.yml:14: resources.prod-db.activity: only vault-database resources "
        "(on PostgreSQL) can record what was run"
    ) in [str(p) for p in caught.value.problems]


def test_check_config_online_knows_what_activity_and_the_audit_join_need(backends, slack, tmp_path):
    needed = required_capabilities(parse_policy(ACTIVITY_POLICY))
    assert needed[f"database/creds/{MONITOR_ROLE}"][0] == {"read"}
    assert needed[f"database/roles/{BROKEN_MONITOR}"] == (
        {"read"},
        "resources.broken-monitor-db.activity",
    )
    assert needed[f"sys/audit-hash/{AUDIT_DEVICE}"] == ({"update"}, "audit.vault_device")

    r = check_config(backends, slack, tmp_path, ACTIVITY_POLICY)
    assert r.returncode == 1, r.stdout + r.stderr
    addr = backends.bao.addr
    problems = [line for line in r.stderr.splitlines() if line.startswith("vault ")]
    assert problems == [
        f"vault {addr}: the monitoring role database/roles/{BROKEN_MONITOR} does not exist "
        "(resources.broken-monitor-db.activity)"
    ], r.stderr
    working = ACTIVITY_POLICY[: ACTIVITY_POLICY.index("  broken-monitor-db:")]
    working += f"audit:\n  vault_device: {AUDIT_DEVICE}\n"
    r = check_config(backends, slack, tmp_path, working)
    assert r.returncode == 0, r.stdout + r.stderr
    # A token without the shipped policy's new paths is told which ones it lacks.
    weak = backends.bao.client()
    weak.sys.create_or_update_policy(
        "no-activity", 'path "database/creds/breakglass-rw" { capabilities = ["read"] }'
    )
    token = weak.auth.token.create(policies=["no-activity"], ttl="10m")["auth"]["client_token"]
    r = check_config(backends, slack, tmp_path, working, VAULT_TOKEN=token)
    assert r.returncode == 1
    assert (
        f"vault {addr}: the bot's token lacks read on database/creds/{MONITOR_ROLE} "
        "(needed by resources.prod-db.activity)"
    ) in r.stderr
    assert (
        f"vault {addr}: the bot's token lacks update on sys/audit-hash/{AUDIT_DEVICE} "
        "(needed by audit.vault_device)"
    ) in r.stderr
    assert token not in r.stderr + r.stdout


@BOTH
def test_statements_are_found_after_vault_dropped_the_user_first(
    abot, slack, backends, clock, incidents
):
    """Vault's own expiry may drop the user a moment before the bot's timer fires: the oid
    recorded at issue still finds its statements."""
    rid, user, password = granted(abot, slack)
    with abot.runtime.store.read() as s:
        grant = s.exec(select(Grant).where(Grant.request_id == rid)).one()
    assert grant.db_user_oid is not None
    with psycopg.connect(backends.pg.url(user, password), autocommit=True) as c:
        c.execute("SELECT count(*) FROM incidents")
        c.execute("SELECT count(*) FROM incidents")
    backends.bao.client().sys.revoke_lease(grant.lease_id)  # as Vault's expiry would
    assert not backends.pg.can_login(user, password)
    clock.advance(timedelta(hours=1))
    assert abot.service.grants.expire_many([rid]) == {rid}
    (event,) = events(abot, rid, Event.ACTIVITY)
    assert json.loads(event.details)["summary"] == f"2 statements: SELECT incidents {TIMES}2"


def test_without_its_oid_a_user_dropped_first_is_unavailable_not_unused(
    abot, slack, backends, clock
):
    rid, _, _ = granted(abot, slack)
    with abot.runtime.store.transaction() as s:  # as if the lookup at issue had failed
        s.execute(sa.update(Grant).where(Grant.request_id == rid).values(db_user_oid=None))
        lease = s.exec(select(Grant.lease_id).where(Grant.request_id == rid)).one()
    backends.bao.client().sys.revoke_lease(lease)
    clock.advance(timedelta(hours=1))
    assert abot.service.grants.expire_many([rid]) == {rid}
    (event,) = events(abot, rid, Event.ACTIVITY)
    assert json.loads(event.details)["summary"] == (
        "activity unavailable: the database user was already dropped "
        "(Vault's own expiry came first)"
    )


def test_statements_postgresql_does_not_normalize_are_recorded_without_their_text(
    abot, slack, backends, incidents, caplog
):
    """Measured on PostgreSQL 18: utility statements keep their literals (a password set
    with ALTER ROLE, a DO block's body). They are recorded by kind only."""
    caplog.set_level(logging.DEBUG)
    rid, user, password = granted(abot, slack)
    secret = "lit-new-password-8812"
    with psycopg.connect(backends.pg.url(user, password), autocommit=True) as c:
        c.execute(sql.SQL("ALTER ROLE CURRENT_USER PASSWORD {}").format(sql.Literal(secret)))
        c.execute("DO $$ BEGIN PERFORM 'lit-do-body-3301'; END $$")
        c.execute("SELECT id FROM incidents /* lit-comment-5120 */ WHERE id = 1")
    click(abot, REQUESTER, credential_dm(slack), ActionId.REVOKE)
    (event,) = events(abot, rid, Event.ACTIVITY)
    details = json.loads(event.details)
    # The DO block's PERFORM runs as a statement inside it: counted (track = all), and
    # normalized like any SELECT.
    assert details["summary"] == (
        f"4 statements: ALTER ROLE {TIMES}1, DO {TIMES}1, SELECT {TIMES}1, "
        f"SELECT incidents {TIMES}1"
    )
    texts = {(st["kind"], st["table"]): st["query"] for st in details["statements"]}
    assert texts == {
        ("ALTER ROLE", None): None,
        ("DO", None): None,
        ("SELECT", None): "SELECT $1",
        ("SELECT", "incidents"): "SELECT id FROM incidents WHERE id = $1",
    }
    everywhere = everything_stored(abot) + slack.everything_sent() + caplog.text
    for literal in (secret, "lit-do-body-3301", "lit-comment-5120"):
        assert literal not in everywhere


def test_summaries_group_by_kind_and_table_and_leave_transaction_control_out():
    stats = [
        StatementStat("SELECT * FROM incidents WHERE id = $1", 12, 12, "app"),
        StatementStat("UPDATE incidents SET state = $1 WHERE id = $2", 2, 2, "app"),
        StatementStat("SELECT state FROM public.incidents WHERE id = $1", 1, 1, "app"),
        StatementStat("BEGIN", 5, 0, "app"),
        StatementStat("COMMIT", 5, 0, "app"),
    ]
    activity = summarize(stats)
    assert activity.summary == (
        f"15 statements: SELECT incidents {TIMES}12, UPDATE incidents {TIMES}2, "
        f"SELECT public.incidents {TIMES}1"
    )
    assert activity.details["transaction_control_calls"] == 10
    assert summarize([]).summary == "credential never used"
    assert summarize([StatementStat("BEGIN", 1, 0)]).summary == (
        "no statements beyond transaction control (1)"
    )
    tables = [f"t{i}" for i in range(60)]
    many = summarize([StatementStat(f"TRUNCATE {t}", 100 - i, 0) for i, t in enumerate(tables)])
    assert many.summary.endswith(", and 52 more")
    assert len(many.details["statements"]) == 50
    assert many.details["statements_left_out"] == 10
    assert classify("WITH c AS (SELECT * FROM src) DELETE FROM dst USING c")[:2] == (
        "DELETE",
        "dst",
    )
    assert classify("DROP TABLE audit.old_orders")[:2] == ("DROP TABLE", "audit.old_orders")


def test_a_database_that_never_answers_costs_the_revocation_a_few_seconds_at_most(
    backends, slack, clock, database_url, tmp_path, incidents
):
    """A listener that takes the connection and never answers (a hung server, a black-holed
    route): the read gives up, the grant ends, the monitoring user is revoked anyway."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        policy = POLICY.replace(
            "    emergency: true\n",
            "    emergency: true\n    activity:\n"
            f"      monitor_role: {MONITOR_ROLE}\n"
            f'      dsn: "host=127.0.0.1 port={port} dbname=app sslmode=disable"\n',
            1,
        )
        b = start_bot(
            backends, slack, database_url, clock=clock, workdir=tmp_path, policy_text=policy
        )
        try:
            reads_before = _monitor_reads(backends)
            rid, user, password = granted(b, slack)
            click(b, REQUESTER, credential_dm(slack), ActionId.REVOKE)
            assert request_row(b, rid).state == State.REVOKED
            assert not backends.pg.can_login(user, password)
            (event,) = events(b, rid, Event.ACTIVITY)
            summary = json.loads(event.details)["summary"]
            assert summary.startswith("activity unavailable: cannot connect to the database: ")
            assert "timeout" in summary
            # One monitoring user at issue (the oid lookup), one at the end: both revoked.
            assert _monitor_reads(backends) == reads_before + 2
            wait_for(lambda: _monitor_users_left(backends) == [])
        finally:
            b.stop()


def _monitor_users_left(backends) -> list[str]:
    """Database users that hold pg_read_all_stats: only the monitoring role's have it."""
    with psycopg.connect(backends.pg.url(), autocommit=True) as c:
        rows = c.execute(
            "SELECT r.rolname FROM pg_roles r JOIN pg_auth_members m ON m.member = r.oid "
            "WHERE m.roleid = 'pg_read_all_stats'::regrole AND NOT r.rolname LIKE 'pg\\_%'"
        ).fetchall()
    return [r[0] for r in rows]
