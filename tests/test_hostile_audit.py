"""The audit trail under attack: a hostile Slack user, an insider with database access, and an
unlucky operator. Each test is a problem found by attacking it (issue 7), fixed."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from bot import migrate
from bot.audit_trail import trail_text
from bot.domain.activity import StatementStat, summarize
from bot.domain.anchors import (
    KeyProblem,
    anchor_of,
    load_private,
    load_public,
    new_private_pem,
    parse,
    public_text,
)
from bot.domain.workflow import Event, State
from bot.sandbox.slack_fake import deny_values, request_values
from bot.sandbox.stack import APPROVER, REQUESTER, SECURITY_CHANNEL, start_bot
from bot.settings import Settings
from bot.slack.ids import ActionId
from bot.store import AccessRequest, AuditEvent, Store, audit, create_db_engine
from tests.helpers import (
    JUSTIFICATION,
    click,
    open_modal,
    request_access,
    request_id_of,
    request_row,
    wait_for,
)
from tests.test_audit_trail import cli, ended_access, sealed, transit_token
from tests.test_vault_edge import check_config

pytestmark = pytest.mark.faults


# ---- anchors an operator or an attacker brings ---------------------------------------------


def test_an_anchor_of_the_empty_chain_verifies(tmp_path):
    """`audit anchor` on a fresh database (cron set up before the first request) writes
    seq=0 with the genesis hash; that line must not fail every later verify."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        migrate.upgrade(engine)
        store = Store(engine)
        empty = anchor_of(0, audit.GENESIS, datetime.now(UTC))
        with store.read() as s:
            assert audit.verify(s, [empty]).ok
        with store.transaction() as s:
            audit.append(s, at=datetime.now(UTC), actor="U0A", action=Event.REQUESTED, request_id=1)
        with store.read() as s:
            result = audit.verify(s, [empty])
            assert result.ok and result.anchors == 1, str(result)
            # A crafted anchor at 0 with any other hash is still a mismatch.
            crafted = anchor_of(0, "f" * 64, datetime.now(UTC))
            assert "rewritten: event 0" in str(audit.verify(s, [crafted]))
    finally:
        engine.dispose()


def test_signed_anchors_read_from_a_slack_export_keep_their_signature():
    """Slack's export escapes every `/` of a message as `\\/`; most base64 signatures hold
    one, and a signature read up to the backslash fails, as if forged."""
    for _ in range(50):
        key = load_private(new_private_pem())
        anchor = anchor_of(12, "a" * 64, datetime(2026, 11, 22, tzinfo=UTC)).signed(key)
        if "/" in anchor.signature:
            break
    else:  # pragma: no cover - 50 signatures without a slash: about 2**-70
        pytest.fail("no signature with a slash")
    text = f":anchor: Audit anchor: …\n```{anchor.line()}```"
    export = json.dumps([{"type": "message", "text": text}]).replace("/", "\\/")
    (found,) = parse(export, "export.json")
    assert found.signature == anchor.signature
    assert found.signature_ok(load_public(public_text(key.public_key())))


def test_a_crafted_anchor_with_an_impossible_time_is_no_anchor(tmp_path):
    """Anyone who can post in the channel can put a line in its export: one with month 99
    crashed `audit verify` with a traceback."""
    bad = tmp_path / "export.txt"
    bad.write_text(f"breakglass-anchor v1 seq=1 hash={'a' * 64} at=2026-99-99T00:00:00Z\n")
    assert parse(bad.read_text()) == []
    url = f"sqlite:///{tmp_path / 'b.db'}"
    assert cli(url, "migrate").returncode == 0
    out = cli(url, "audit", "verify", "--anchors", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"no anchor line in {bad}" in out.stderr


def test_a_key_path_that_names_no_file_says_so(tmp_path):
    missing = str(tmp_path / "keys" / "anchor.pem")
    with pytest.raises(KeyProblem, match="nor the path of an existing file"):
        load_private(missing)
    with pytest.raises(KeyProblem, match="existing file"):
        load_public("/etc/breakglass/anchorpub")  # base64 letters only: still a path
    settings = Settings(audit_signing_key=missing)
    assert any(
        p.startswith("AUDIT_SIGNING_KEY: neither PEM nor base64, nor the path of an existing file")
        for p in settings.problems(serving=False)
    )
    # The key file itself is read, never the value echoed.
    pem = tmp_path / "anchor.pem"
    pem.write_text(new_private_pem())
    assert load_private(str(pem)) is not None


def test_an_export_that_cannot_be_written_leaves_nothing_half(tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    assert cli(url, "migrate").returncode == 0
    target = tmp_path / "archive"
    target.mkdir()  # a directory where the file should go
    out = cli(url, "audit", "export", "--out", str(target))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"cannot write {target}: Is a directory" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive", "b.db"]


# ---- an insider with the bot's database role ----------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_the_prune_path_removes_only_details_of_finished_requests_marked_pruned(
    bot, slack, database_url
):
    """Revision 0005 let any transaction with `breakglass.prune = on` (on SQLite, any
    UPDATE) remove the details of any event: a live request's justification vanished from
    its trail and `audit verify` only counted one more pruned event."""
    live = request_id_of(request_access(bot, slack))
    finished = ended_access(bot, slack, user="U0CAROL")  # emergency: its review is open
    bot.service.trail.anchor(bot.service.core.clock())
    engine = bot.runtime.store.engine

    def seq_of(request_id: int | None, action: str) -> int:
        with bot.runtime.store.read() as s:
            return s.exec(
                select(AuditEvent.seq).where(
                    AuditEvent.request_id.is_(None)  # type: ignore[union-attr]
                    if request_id is None
                    else AuditEvent.request_id == request_id,
                    AuditEvent.action == action,
                )
            ).first()

    def prune(seq: int) -> None:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SET LOCAL breakglass.prune = 'on'"))
            conn.execute(
                sa.text("UPDATE audit_event SET details = NULL WHERE seq = :s"), {"s": seq}
            )

    def mark(request_id: int) -> None:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE access_request SET details_pruned_at = :t WHERE id = :i"),
                {"t": bot.service.core.clock(), "i": request_id},
            )

    mark(live)  # marked, but live: still refused
    refused = [
        seq_of(live, "requested"),
        seq_of(finished, "requested"),  # finished, not marked pruned
        seq_of(None, "anchored"),  # belongs to no request
    ]
    for seq in refused:
        with pytest.raises(DBAPIError, match="append-only"):
            prune(seq)
    mark(finished)
    with pytest.raises(DBAPIError, match="append-only"):
        prune(seq_of(finished, "requested"))  # marked, but its review is still open
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE review SET reviewed_at = :t"), {"t": bot.service.core.clock()})
    prune(seq_of(finished, "requested"))  # what retention does: allowed
    with bot.runtime.store.read() as s:
        result = audit.verify(s)
        assert result.ok and result.pruned == 1, str(result)
        assert request_row(bot, live).state == State.PENDING
        assert s.get(AuditEvent, seq_of(live, "requested")).details is not None


# ---- an unlucky operator: free text sealed with a transit key Vault cannot use now ---------


def test_a_request_vault_cannot_seal_is_refused_clearly_and_records_nothing(
    backends, slack, clock, database_url, tmp_path, vault_proxy, caplog
):
    """With audit.encrypt on and Vault down (or the key missing), the requester got
    "Something went wrong on our side" and an error with a traceback in the log."""
    caplog.set_level(logging.INFO)
    token = transit_token(backends)
    bot = start_bot(
        backends,
        slack,
        database_url,
        clock=clock,
        workdir=tmp_path,
        policy_text=sealed("bg-audit"),
        vault_token=token,
        vault_addr=vault_proxy.url,
    )
    try:
        parent = request_access(bot, slack)  # Vault up: sealed and filed
        rid = request_id_of(parent)
        vault_proxy.refuse()
        view = open_modal(bot, slack, "U0CAROL")
        values = request_values("prod-db", "30m", JUSTIFICATION, "INC-1")
        assert bot.driver.submit_view("U0CAROL", view, values).status_code == 200
        told = wait_for(lambda: slack.dms("U0CAROL"))[-1].text
        assert told.startswith(
            "Your request was not recorded: the bot could not encrypt it with Vault ("
        ), told
        assert "try again in a minute" in told and "Something went wrong" not in told
        # The approver denying meanwhile: told the same way; the request stays pending.
        click(bot, APPROVER, parent, ActionId.DENY)
        r = bot.driver.submit_view(APPROVER, slack.views_opened()[-1], deny_values("No: wait."))
        assert r.status_code == 200
        told = wait_for(lambda: slack.dms(APPROVER))[-1].text
        assert told.startswith("Your denial was not recorded: the bot could not encrypt it")
        assert request_row(bot, rid).state == State.PENDING
        with bot.runtime.store.read() as s:
            requests = s.exec(select(AccessRequest)).all()
            assert [r.requester for r in requests] == [REQUESTER]
            assert audit.verify(s).ok
        assert not [r for r in caplog.records if "unhandled error" in r.getMessage()]
        assert not any(r.exc_info for r in caplog.records if r.name.startswith("bot"))
    finally:
        vault_proxy.restore()
        bot.stop()


def test_a_transit_key_missing_in_vault_refuses_the_request_clearly(
    backends, slack, clock, database_url, tmp_path
):
    bot = start_bot(
        backends,
        slack,
        database_url,
        clock=clock,
        workdir=tmp_path,
        policy_text=sealed("no-such-key"),
        vault_token=transit_token(backends),
    )
    try:
        view = open_modal(bot, slack)
        values = request_values("prod-db", "30m", JUSTIFICATION, "INC-1")
        assert bot.driver.submit_view(REQUESTER, view, values).status_code == 200
        told = wait_for(lambda: slack.dms(REQUESTER))[-1].text
        assert told.startswith("Your request was not recorded: the bot could not encrypt it")
        assert not slack.channel_messages(SECURITY_CHANNEL)
    finally:
        bot.stop()


# ---- a grant's database user naming its tables ----------------------------------------------


def test_table_names_cannot_reorder_or_hide_text_in_slack_or_audit_show(bot, slack):
    """A quoted identifier may hold any character; the form refuses bidi controls from
    people because "x\\u202etxt.exe" shows as "xexe.txt": an activity event carried them to
    the security channel and `audit show` untouched."""
    hostile = 'SELECT * FROM "invoices\u202egpj.exe" JOIN "a\u2028[9] approved by U0BOSS" ON true'
    activity = summarize([StatementStat(hostile, 3, 1, "app\u202e")])
    for text in (activity.summary, json.dumps(activity.details, ensure_ascii=False)):
        assert not any(ch in text for ch in "\u202e\u2028"), text
    assert "invoices?gpj.exe" in activity.summary

    rid = request_id_of(request_access(bot, slack))
    with bot.runtime.store.transaction() as s:
        audit.append(
            s,
            at=bot.service.core.clock(),
            actor="breakglass",
            action=Event.ACTIVITY,
            request_id=rid,
            details={"summary": "a\u202eb\u2066c\u200fd\x1b[2Je"},
        )
    with bot.runtime.store.read() as s:
        shown = trail_text(s, rid)
    assert "summary: a?b?c?d?[2Je" in shown


def test_check_config_online_finds_a_transit_key_vault_does_not_have(backends, slack, tmp_path):
    """The token's capabilities were checked on the key's paths, not that the key exists:
    check-config passed, and the first request failed (the operator wrote the Vault policy
    from bot/vault/breakglass-bot.hcl and forgot `bao write -f transit/keys/NAME`)."""
    token = transit_token(backends)
    root = backends.bao.client()
    root.sys.create_or_update_policy(
        "breakglass-transit-forgotten",
        'path "transit/encrypt/no-such-key" { capabilities = ["update"] }\n'
        'path "transit/decrypt/no-such-key" { capabilities = ["update"] }\n',
    )
    forgot = root.auth.token.create(
        policies=["breakglass-bot", "breakglass-transit-forgotten"], ttl="10m"
    )["auth"]["client_token"]
    r = check_config(backends, slack, tmp_path, sealed("no-such-key"), VAULT_TOKEN=forgot)
    assert r.returncode == 1, r.stdout + r.stderr
    assert (
        f"vault {backends.bao.addr}: audit.encrypt: cannot encrypt with transit/keys/no-such-key ("
    ) in r.stderr
    r = check_config(backends, slack, tmp_path, sealed("bg-audit"), VAULT_TOKEN=token)
    assert r.returncode == 0, r.stdout + r.stderr
