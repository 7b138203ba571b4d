"""The audit trail an auditor trusts: the database refuses edits, anchors kept outside it
catch a truncated or rewritten chain, the daily round alerts, and retention prunes free text
without breaking verification."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from bot import migrate
from bot.domain.anchors import anchor_of, load_private, new_private_pem, parse, public_text
from bot.domain.workflow import Event, State
from bot.sandbox.stack import APPROVER, POLICY, REQUESTER, SECURITY_CHANNEL, start_bot
from bot.slack.ids import ActionId
from bot.store import AccessRequest, AuditEvent, AuditHead, Store, audit, create_db_engine
from tests.helpers import (
    JUSTIFICATION,
    click,
    credential_dm,
    current,
    request_access,
    request_id_of,
    request_row,
    tamper,
    wait_for,
)

# Where the database's own behaviour is the point (triggers, locks, migrations): both. The
# rest runs on SQLite, the `database_url` fixture's default.
BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

RETAINED = POLICY + "retention:\n  details: 400d\n"


def cli(
    database_url: str, *args: str, env: dict[str, str] | None = None, real: bool = False
) -> subprocess.CompletedProcess:
    """`breakglass ARGS` with DATABASE_URL and `env`: in this process (the same `main()`,
    without a Python start-up), or as its own process with `real`."""
    import contextlib
    import io
    import os
    from unittest import mock

    environ = {**os.environ, "DATABASE_URL": database_url, **(env or {})}
    if real:
        return subprocess.run(
            [sys.executable, "-m", "bot.cli", *args],
            capture_output=True,
            text=True,
            env=environ,
            timeout=60,
        )
    from bot.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, environ, clear=True),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def events(store: Store) -> list[AuditEvent]:
    with store.read() as s:
        return list(s.exec(select(AuditEvent).order_by(AuditEvent.seq)))


def ended_access(bot, slack, **kw) -> int:
    """A request filed, broken-glass and revoked by its requester: finished."""
    parent = request_access(bot, slack, emergency=True, **kw)
    rid = request_id_of(parent)
    user = kw.get("user", REQUESTER)
    click(bot, user, credential_dm(slack, user), ActionId.REVOKE)
    assert request_row(bot, rid).state == State.REVOKED
    return rid


# ---- the database refuses ----------------------------------------------------------------


@BOTH
def test_the_database_refuses_to_change_or_remove_events(bot, slack):
    request_access(bot, slack)
    engine = bot.runtime.store.engine
    refused = [
        "UPDATE audit_event SET actor = 'U0EVE' WHERE seq = 1",
        "UPDATE audit_event SET details = '{}', details_hash = 'x' WHERE seq = 1",
        "UPDATE audit_event SET details = NULL, hash = 'x' WHERE seq = 1",
        "DELETE FROM audit_event WHERE seq = 1",
        "UPDATE audit_head SET seq = 0, hash = 'x'",
        "DELETE FROM audit_head",
    ]
    if engine.dialect.name == "postgresql":
        # Even removing details alone needs the retention path's session setting.
        refused += [
            "UPDATE audit_event SET details = NULL WHERE seq = 1",
            "TRUNCATE audit_event",
            "TRUNCATE audit_head",
        ]
    for sql in refused:
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(sa.text(sql))
    assert len(events(bot.runtime.store)) == 1
    with bot.runtime.store.read() as s:
        assert audit.verify(s).ok


# ---- anchors -----------------------------------------------------------------------------


@BOTH
def test_truncation_and_a_full_rewrite_pass_alone_but_fail_against_anchors(
    bot, slack, database_url, tmp_path
):
    key = new_private_pem()
    env = {"AUDIT_SIGNING_KEY": key}
    public = public_text(load_private(key).public_key())
    request_access(bot, slack)
    request_access(bot, slack, user="U0CAROL", emergency=True)
    anchors = tmp_path / "anchors.txt"
    made = cli(database_url, "audit", "anchor", "--out", str(anchors), env=env, real=True)
    assert made.returncode == 0, made.stderr
    (anchor,) = parse(anchors.read_text())
    store = bot.runtime.store
    assert anchor.seq == len(events(store)) and anchor.signature
    ok = cli(database_url, "audit", "verify", "--anchors", str(anchors), "--public-key", public)
    assert ok.returncode == 0, ok.stderr
    assert "1 anchors matched" in ok.stdout

    # Truncation: the last events removed and the head set back, consistently.
    keep = anchor.seq - 2
    kept = events(store)[keep - 1]
    tamper(store.engine, "DELETE FROM audit_event WHERE seq > :k", k=keep)
    tamper(store.engine, "UPDATE audit_head SET seq = :k, hash = :h", k=keep, h=kept.hash)
    alone = cli(database_url, "audit", "verify")
    assert alone.returncode == 0, "a clean truncation is invisible without an anchor"
    against = cli(database_url, "audit", "verify", "--anchors", str(anchors), real=True)
    assert against.returncode == 1
    assert f"truncated: the anchor of {anchor.at:%Y-%m-%d %H:%M:%S}Z" in against.stderr
    assert f"names event {anchor.seq}, the chain ends at {keep}" in against.stderr
    assert "Traceback" not in against.stderr


@BOTH
def test_a_full_rewrite_is_caught_by_an_anchor(bot, slack, database_url, tmp_path):
    request_access(bot, slack)
    request_access(bot, slack, user="U0CAROL", emergency=True)
    store = bot.runtime.store
    anchors = tmp_path / "slack-export.json"
    line = bot.service.trail.head().line()
    # Anchors are found wherever they were kept, e.g. inside a Slack export's JSON.
    anchors.write_text('[{"text": "Audit anchor:\\n```' + line + '```"}]')
    # Rewrite every event: the first actor changed, every hash recomputed, the head too.
    prev = audit.GENESIS
    for ev in events(store):
        actor = "U0EVE" if ev.seq == 1 else ev.actor
        new_hash = audit.event_hash(
            seq=ev.seq,
            at=ev.at,
            actor=actor,
            action=ev.action,
            request_id=ev.request_id,
            details_hash=ev.details_hash,
            prev_hash=prev,
        )
        tamper(
            store.engine,
            "UPDATE audit_event SET actor = :a, prev_hash = :p, hash = :h WHERE seq = :s",
            a=actor,
            p=prev,
            h=new_hash,
            s=ev.seq,
        )
        prev = new_hash
    tamper(store.engine, "UPDATE audit_head SET hash = :h", h=prev)
    with store.read() as s:
        assert audit.verify(s).ok, "a full rewrite is consistent in itself"
    result = cli(database_url, "audit", "verify", "--anchors", str(anchors))
    assert result.returncode == 1
    seq = parse(line)[0].seq
    assert f"rewritten: event {seq} differs from the anchor of" in result.stderr


def test_a_forged_anchor_is_refused_by_the_signature(bot, slack, database_url, tmp_path):
    key = new_private_pem()
    public = public_text(load_private(key).public_key())
    request_access(bot, slack)
    with bot.runtime.store.read() as s:
        head = s.get(AuditHead, 1)
    honest = anchor_of(head.seq, head.hash, datetime.now(UTC)).signed(load_private(key))
    forged = anchor_of(head.seq + 5, "f" * 64, datetime.now(UTC)).signed(
        load_private(new_private_pem())
    )
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text(honest.line() + "\n")
    bad.write_text(honest.line() + "\n" + forged.line() + "\n")
    ok = cli(database_url, "audit", "verify", "--anchors", str(good), "--public-key", public)
    assert ok.returncode == 0, ok.stderr
    refused = cli(database_url, "audit", "verify", "--anchors", str(bad), "--public-key", public)
    assert refused.returncode == 1
    assert f"audit anchor {bad}:2 has a signature that fails" in refused.stderr
    unsigned = tmp_path / "unsigned.txt"
    unsigned.write_text(honest.line().split(" sig=")[0] + "\n")
    refused = cli(
        database_url, "audit", "verify", "--anchors", str(unsigned), "--public-key", public
    )
    assert refused.returncode == 1 and "is not signed" in refused.stderr
    wrong_key = cli(database_url, "audit", "verify", "--anchors", str(good), "--public-key", "YWJj")
    assert wrong_key.returncode == 2
    assert "the public key: an Ed25519 public key is 32 bytes" in wrong_key.stderr


@POSTGRESQL
def test_the_daily_round_anchors_once_across_replicas_and_alerts_a_broken_chain(
    backends, slack, clock, database_url, tmp_path
):
    key = new_private_pem()
    one = start_bot(
        backends, slack, database_url, clock=clock, workdir=tmp_path, audit_signing_key=key
    )
    two = start_bot(
        backends, slack, database_url, clock=clock, workdir=tmp_path, audit_signing_key=key
    )
    try:
        request_access(one, slack)
        moment = one.service.trail.due(clock())
        barrier = threading.Barrier(2)
        made: list[object] = []

        def round_(replica) -> None:
            barrier.wait()
            made.append(replica.service.trail.daily(moment))

        threads = [threading.Thread(target=round_, args=(r,)) for r in (one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        anchors = [a for a in made if a is not None]
        assert len(anchors) == 1, made
        one.runtime.service.outbox.drain()
        posted = [m for m in slack.channel_messages(SECURITY_CHANNEL) if "Audit anchor" in m.text]
        assert len(posted) == 1
        (found,) = parse(posted[0].text)
        assert found.signature_ok(load_private(key).public_key())
        with one.runtime.store.read() as s:
            assert audit.verify(s, [found]).ok

        # Someone edits an event behind the bot's back: the next round alerts, loudly.
        tamper(one.runtime.store.engine, "UPDATE audit_event SET actor = 'U0EVE' WHERE seq = 1")
        clock.advance(timedelta(days=1))
        assert one.service.trail.daily(one.service.trail.due(clock())) is not None
        one.runtime.service.outbox.drain()
        alerts = [
            m for m in slack.channel_messages(SECURITY_CHANNEL) if "daily verification" in m.text
        ]
        assert len(alerts) == 1
        assert "<!here>" in alerts[0].text and "broken at event 1" in alerts[0].text
    finally:
        one.stop()
        two.stop()


# ---- retention ---------------------------------------------------------------------------


@BOTH
def test_retention_prunes_old_free_text_and_verify_still_passes(
    backends, slack, clock, database_url, tmp_path
):
    bot = start_bot(
        backends, slack, database_url, clock=clock, workdir=tmp_path, policy_text=RETAINED
    )
    try:
        old = ended_access(bot, slack)
        # A review is owed after an emergency: close it, or the request is not finished.
        with bot.runtime.store.transaction() as s:
            s.execute(sa.text("UPDATE review SET reviewed_at = :t, notes = 'fine'"), {"t": clock()})
        clock.advance(timedelta(days=401))
        recent = ended_access(bot, slack, user="U0CAROL")
        live = request_id_of(request_access(bot, slack, user="U0DAVE"))
        store = bot.runtime.store
        before = {e.seq: e for e in events(store)}

        dry = bot.service.trail.prune(clock(), dry_run=True)
        assert dry.requests == 1 and dry.events > 0
        assert events(store)[0].details is not None, "a dry run changes nothing"
        done = bot.service.trail.prune(clock())
        assert (done.requests, done.events) == (1, dry.events)

        after = events(store)
        for ev in after:
            if ev.request_id == old:
                assert ev.details is None and ev.details_hash == before[ev.seq].details_hash
            elif ev.seq in before:
                assert ev.details == before[ev.seq].details
        with store.read() as s:
            assert s.get(AccessRequest, old).justification == ""
            assert s.get(AccessRequest, old).details_pruned_at == clock()
            assert s.get(AccessRequest, recent).justification == JUSTIFICATION
            assert s.get(AccessRequest, live).justification == JUSTIFICATION
            pruned_event = after[-1]
            assert pruned_event.action == Event.PRUNED
            result = audit.verify(s)
        assert result.ok and result.pruned == done.events, str(result)
        verified = cli(database_url, "audit", "verify")
        assert verified.returncode == 0
        assert f"{done.events} with details pruned" in verified.stdout
        again = bot.service.trail.prune(clock())
        assert again.requests == 0
        # The export still names every event, with its digest; the pruned details are None.
        exported = [e for e in _export(store) if e["request_id"] == old]
        assert exported and all(e["details"] is None and e["details_hash"] for e in exported)
    finally:
        bot.stop()


def _export(store: Store) -> list[dict]:
    with store.read() as s:
        return list(audit.export(s))


def test_prune_from_the_cli_needs_a_retention(bot, slack, database_url, tmp_path):
    policy = tmp_path / "p.yml"
    policy.write_text(POLICY)
    out = cli(database_url, "audit", "prune", env={"BREAKGLASS_CONFIG": str(policy)})
    assert out.returncode == 2
    assert "no retention is set; add `retention: {details: 400d}`" in out.stderr
    policy.write_text(RETAINED)
    out = cli(database_url, "audit", "prune", "--dry-run", env={"BREAKGLASS_CONFIG": str(policy)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("would prune the free text of 0 requests finished before")


# ---- upgrading a chain written before the digest format ------------------------------------


@BOTH
def test_events_written_before_migration_0005_still_verify_and_are_never_pruned(
    database_url, tmp_path
):
    engine = create_db_engine(database_url)
    try:
        migrate.upgrade(engine, "0004")
        at = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
        prev = audit.GENESIS
        with engine.begin() as conn:
            for seq in (1, 2):
                details = audit.canonical({"n": seq})
                h = audit.event_hash_v1(
                    seq=seq,
                    at=at,
                    actor="U0OLD",
                    action="requested",
                    request_id=None,
                    details=details,
                    prev_hash=prev,
                )
                conn.execute(
                    sa.text(
                        "INSERT INTO audit_event (seq, at, actor, action, request_id, details, "
                        "prev_hash, hash) VALUES (:s, :at, 'U0OLD', 'requested', NULL, :d, :p, :h)"
                    ),
                    {
                        "s": seq,
                        "at": at
                        if engine.dialect.name == "postgresql"
                        else at.strftime("%Y-%m-%d %H:%M:%S.%f"),
                        "d": details,
                        "p": prev,
                        "h": h,
                    },
                )
                prev = h
            conn.execute(sa.text("UPDATE audit_head SET seq = 2, hash = :h"), {"h": prev})
        migrate.upgrade(engine)
        store = Store(engine)
        with store.transaction() as s:
            audit.append(s, at=at, actor="U0NEW", action=Event.REQUESTED, request_id=None)
        with store.read() as s:
            result = audit.verify(s)
        assert result.ok and result.checked == 3, str(result)
        assert [e.v for e in events(store)] == [1, 1, 2]
        # A version-1 event's details are what its hash covers: never pruned.
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    conn.execute(sa.text("SET LOCAL breakglass.prune = 'on'"))
                conn.execute(sa.text("UPDATE audit_event SET details = NULL WHERE seq = 1"))
    finally:
        engine.dispose()


# ---- free text sealed at rest --------------------------------------------------------------


def sealed(key: str) -> str:
    """The sandbox policy with its free text sealed with transit key `key`."""
    return POLICY + f"audit:\n  encrypt: transit/keys/{key}\n"


SEALED = sealed("bg-audit")


def transit_token(backends) -> str:
    """The bot's shipped policy plus the transit paths its file documents (uncommented)."""
    root = backends.bao.client()
    if "transit/" not in root.sys.list_mounted_secrets_engines()["data"]:
        root.sys.enable_secrets_engine("transit", path="transit")
    root.secrets.transit.create_key(name="bg-audit", mount_point="transit")
    root.sys.create_or_update_policy(
        "breakglass-transit",
        'path "transit/encrypt/bg-audit" { capabilities = ["update"] }\n'
        'path "transit/decrypt/bg-audit" { capabilities = ["update"] }\n',
    )
    created = root.auth.token.create(policies=["breakglass-bot", "breakglass-transit"], ttl="1h")
    return created["auth"]["client_token"]


def test_free_text_is_sealed_in_the_database_and_readable_in_slack(
    backends, slack, clock, database_url, tmp_path
):
    from bot.sandbox.slack_fake import deny_values

    token = transit_token(backends)
    bot = start_bot(
        backends,
        slack,
        database_url,
        clock=clock,
        workdir=tmp_path,
        policy_text=SEALED,
        vault_token=token,
    )
    why, ticket, reason = JUSTIFICATION, "INC-90210", "Use the read replica, it has the data."
    try:
        parent = request_access(bot, slack, ticket=ticket)
        click(bot, APPROVER, parent, ActionId.DENY)
        r = bot.driver.submit_view(APPROVER, slack.views_opened()[-1], deny_values(reason))
        assert r.status_code == 200 and r.text == ""
        rid = request_id_of(parent)
        # Slack shows them as typed: the card, and the thread's reply for the denial.
        card = str(current(slack, parent).blocks)
        assert why[:40] in card and ticket in card and reason in card
        assert any(reason in m.text for m in slack.thread(parent.channel, parent.ts))
        # The database holds none of them: every text column of every table.
        dump = _every_text(bot.runtime.store)
        for plain in (why[:30], reason[:20]):
            assert plain not in dump, plain
        row = request_row(bot, rid)
        assert row.justification.startswith("sealed:transit/keys/bg-audit:vault:v1:")
        # Verifying needs no key: no Vault in its environment at all.
        no_vault = {"VAULT_ADDR": "", "VAULT_TOKEN": ""}
        verified = cli(database_url, "audit", "verify", env=no_vault)
        assert verified.returncode == 0, verified.stderr
        # `audit show` opens them with the bot's Vault, and says "(sealed)" without one.
        vault = {"VAULT_ADDR": backends.bao.addr, "VAULT_TOKEN": token}
        shown = cli(database_url, "audit", "show", str(rid), env=vault)
        assert shown.returncode == 0, shown.stderr
        assert f"Justification: {why}" in shown.stdout and f"reason: {reason}" in shown.stdout
        blind = cli(database_url, "audit", "show", str(rid), env=no_vault)
        assert "Justification: (sealed)" in blind.stdout and why[:30] not in blind.stdout
    finally:
        bot.stop()


def _every_text(store: Store) -> str:
    """Every value of every column of every table, as one text."""
    out = []
    with store.engine.connect() as conn:
        for table in sa.inspect(store.engine).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):  # noqa: S608
                out.append(" ".join(str(v) for v in row))
    return "\n".join(out)


@pytest.mark.faults
def test_with_vault_down_a_sealed_request_is_refused_plainly_and_nothing_half_kept(
    backends, slack, clock, database_url, tmp_path, vault_proxy
):
    from bot.sandbox.slack_fake import request_values
    from tests.helpers import open_modal

    bot = start_bot(
        backends,
        slack,
        database_url,
        clock=clock,
        workdir=tmp_path,
        policy_text=SEALED,
        vault_token=transit_token(backends),
        vault_addr=vault_proxy.url,
    )
    try:
        view = open_modal(bot, slack)
        vault_proxy.refuse()
        r = bot.driver.submit_view(
            REQUESTER, view, request_values("prod-db", "30m", JUSTIFICATION, "INC-1")
        )
        assert r.status_code == 200
        # The modal closed (acked first); the person is told why nothing was recorded.
        told = wait_for(lambda: [m for m in slack.dms(REQUESTER) if "not recorded" in m.text])
        assert "could not encrypt it with Vault" in told[0].text
        with bot.runtime.store.read() as s:
            assert s.exec(select(AccessRequest)).all() == []
            assert s.exec(select(AuditEvent)).all() == []
        assert JUSTIFICATION[:30] not in _every_text(bot.runtime.store)
        # Vault back: the same form files, sealed.
        vault_proxy.restore()
        parent = request_access(bot, slack)
        assert request_row(bot, request_id_of(parent)).justification.startswith("sealed:")
    finally:
        bot.stop()
