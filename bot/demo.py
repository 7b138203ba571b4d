"""`breakglass demo`: one request played end to end on embedded OpenBao, PostgreSQL and Slack."""

from __future__ import annotations

import logging
import tempfile
import textwrap
from datetime import timedelta
from pathlib import Path

from bot.chart import draw_events_chart
from bot.sandbox.openbao import AUDIT_DEVICE, MONITOR_ROLE
from bot.sandbox.slack_fake import (
    FakeSlack,
    Message,
    plain,
    render_blocks,
    request_values,
    revealed,
    review_values,
)
from bot.sandbox.stack import (
    APPROVER,
    APPROVER_2,
    NAMES,
    POLICY,
    REQUESTER,
    SECURITY_CHANNEL,
    Backends,
    Bot,
    start_bot,
)
from bot.slack.digest import digest_text
from bot.slack.ids import ActionId, BlockId

# The sandbox policy, recording what prod-db's grants ran and joinable with OpenBao's audit log.
DEMO_POLICY = (
    POLICY.replace(
        "    emergency: true\n",
        f"    emergency: true\n    activity: {{monitor_role: {MONITOR_ROLE}}}\n",
        1,
    )
    + f"audit:\n  vault_device: {AUDIT_DEVICE}\n"
)


def _say(line: str = "") -> None:
    print(line, flush=True)


def _show(msg: Message, indent: str = "  ") -> None:
    for line in render_blocks(msg.blocks, msg.text, NAMES):
        for part in line.splitlines() or [""]:
            _say(
                textwrap.fill(
                    part,
                    100,
                    initial_indent=indent,
                    subsequent_indent=indent,
                    # A generated username or a token stays whole, to copy it.
                    break_long_words=False,
                    break_on_hyphens=False,
                )
                if part
                else indent.rstrip()
            )


def _newest_card(slack: FakeSlack) -> Message:
    return [m for m in slack.channel_messages(SECURITY_CHANNEL) if m.thread_ts is None][-1]


def _break_the_glass(bot: Bot, backends: Backends, slack: FakeSlack) -> bool:
    """The emergency path: no approver, access at once, a review owed once it ends."""
    d = bot.driver
    _say("\n7. @carol breaks the glass on prod-db (emergency: no approver needed)")
    d.command(APPROVER_2).raise_for_status()
    d.submit_view(
        APPROVER_2,
        slack.views_opened()[-1],
        request_values(
            "prod-db",
            "15m",
            "Pager at 02:10: replication stuck, nobody reachable to approve.",
            "INC-4712",
            emergency=True,
        ),
    ).raise_for_status()
    parent = _newest_card(slack)
    dm = [m for m in slack.dms(APPROVER_2) if m.blocks][-1]
    _say("8. Security is alerted; @carol's access ends (she clicks Revoke now): a review is owed")
    d.click(APPROVER_2, dm, ActionId.REVOKE).raise_for_status()
    button = next(
        m
        for m in slack.thread(SECURITY_CHANNEL, parent.ts)
        if any(b.get("block_id") == BlockId.REVIEW_ACTIONS for b in m.blocks)
    )
    _say("9. @bob reviews it: legitimate")
    d.click(APPROVER, button, ActionId.REVIEW).raise_for_status()
    d.submit_view(
        APPROVER,
        slack.views_opened()[-1],
        review_values("legitimate", "Replication incident INC-4712; access used as stated."),
    ).raise_for_status()
    _say("\n================ #security: the emergency, its end and its review ================")
    parent = _newest_card(slack)
    _show(parent)
    for reply in slack.thread(SECURITY_CHANNEL, parent.ts):
        _show(reply, "    ")
    return "reviewed by" in " ".join(render_blocks(parent.blocks, parent.text, NAMES))


def _vault_join(bot: Bot, backends: Backends) -> None:
    """The grant's Vault audit HMACs, and what they find in OpenBao's own audit log."""
    from sqlmodel import select

    from bot.store import Grant

    with bot.runtime.store.read() as s:
        grant = s.exec(select(Grant).order_by(Grant.id)).first()  # type: ignore[arg-type]
    if grant is None or not grant.accessor_hmac:
        return
    entries = backends.bao.audit_entries()
    found = sum(1 for e in entries if e.get("auth", {}).get("accessor") == grant.accessor_hmac)
    _say("\n================ joined with OpenBao's audit log ================")
    _say(f"  the grant's token accessor, as the audit device writes it: {grant.accessor_hmac}")
    _say(f"  entries of OpenBao's audit log made with that token: {found}")


def run_demo(out_dir: str | None = None) -> int:
    for name in ("", "alembic", "werkzeug", "apscheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _say("Starting embedded PostgreSQL and OpenBao (dev server)...")
    backends = Backends.start()
    slack = FakeSlack().start()
    tmp = tempfile.TemporaryDirectory(prefix="bg-demo-")
    bot = None
    try:
        bot = start_bot(
            backends,
            slack,
            f"sqlite:///{Path(tmp.name) / 'breakglass.db'}",
            workdir=Path(tmp.name),
            policy_text=DEMO_POLICY,
        )
        d = bot.driver
        _say(f"Bot serving on {bot.server.url}; OpenBao at {backends.bao.addr}\n")

        _say("1. @alice types /breakglass and fills in the form")
        d.command(REQUESTER).raise_for_status()
        modal = slack.views_opened()[-1]
        d.submit_view(
            REQUESTER,
            modal,
            request_values(
                "prod-db",
                "30m",
                "Checkout is failing: orders table is locked, need to kill the blocking session.",
                "INC-4711",
            ),
        ).raise_for_status()

        parent = slack.parent(SECURITY_CHANNEL)
        _say("   The request waits in #security, as the approvers see it:")
        _show(parent, indent="     ")
        _say("2. @bob approves in the security channel")
        d.click(APPROVER, parent, ActionId.APPROVE).raise_for_status()

        dm = [m for m in slack.dms(REQUESTER) if m.blocks][-1]
        _say("3. @alice clicks Reveal in her private message")
        d.click(REQUESTER, dm, ActionId.REVEAL).raise_for_status()
        modal_id = slack.views_opened()[-1]["id"]
        fields = revealed(slack, modal_id)
        user, password = fields["username"], fields["password"]

        ok = backends.pg.can_login(user, password)
        _say(f"4. Login to PostgreSQL as {user}: {'succeeded' if ok else 'FAILED'}")
        if ok:
            import psycopg

            with psycopg.connect(backends.pg.url(user, password), autocommit=True) as c:
                c.execute("SELECT datname FROM pg_database WHERE datname = 'app'")
            _say("   (and looks around: its statements are recorded when the access ends)")
        _say("5. @alice clicks Revoke now")
        d.click(REQUESTER, dm, ActionId.REVOKE).raise_for_status()
        refused = backends.pg.login_error(user, password)
        after = refused is None
        _say(
            "6. Login with the same credential after revocation: "
            + ("still works (BUG)" if after else f"refused\n   PostgreSQL said: {refused}")
        )

        _say("\n================ #security (as Slack shows it) ================")
        parent = slack.parent(SECURITY_CHANNEL)
        _show(parent)
        _say(f"  ── thread ({len(slack.thread(SECURITY_CHANNEL, parent.ts))} replies) ──")
        for reply in slack.thread(SECURITY_CHANNEL, parent.ts):
            _show(reply, "    ")
        _vault_join(bot, backends)
        _say("\n================ @alice's private messages with the bot ================")
        for msg in slack.dms(REQUESTER):
            if msg.ts == dm.ts:
                _show(dm)  # as delivered; its token is spent now
                _say(f"  ✎ edited {msg.edits} times since; now:")
            _show(msg)
            _say("  ·")
        _say(
            "\n================ the Reveal modal @alice saw (password masked here) ================"
        )
        shown = next(v for v in reversed(slack.views_updated()) if v["id"] == modal_id)
        for block in shown["blocks"]:
            text = block.get("text", {}).get("text") or " ".join(
                e.get("text", "") for e in block.get("elements", [])
            )
            text = text.replace(password, password[:3] + "…" + f" ({len(password)} characters)")
            for line in plain(text, NAMES).strip("`").splitlines():
                _say(f"  {line}")
        _say("  (shown once; Slack keeps no history of modals and the bot stored nothing)")
        reviewed = _break_the_glass(bot, backends, slack)

        from bot.cli import stats_table
        from bot.domain.periods import Period
        from bot.usecases.digest import build_digest

        now = bot.runtime.service.core.clock()
        report = bot.runtime.service.stats.report(Period(now - timedelta(days=1), now))
        _say("\n================ breakglass stats --since 1d ================")
        for line in stats_table(report).splitlines():
            _say(f"  {line}")
        digest = build_digest(bot.runtime.service.stats, now + timedelta(days=1))
        out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="breakglass-demo-"))
        chart = draw_events_chart(
            digest.days, digest.events_by_resource, digest.outside_by_day, out / "digest.png"
        )
        (out / "digest.txt").write_text(plain(digest_text(digest), NAMES) + "\n")
        _say(f"\nThe weekly digest (what `breakglass digest --out {out}` writes):")
        _say(f"  text:  {out / 'digest.txt'}")
        _say(f"  chart: {chart}")
        with bot.runtime.store.read() as s:
            from bot.store import audit

            result = audit.verify(s)
        _say(f"\nAudit: {result}")
        success = ok and not after and reviewed and result.ok
        _say(
            "\nDemo "
            + (
                "finished: access granted, used, revoked; glass broken, reviewed, measured; "
                "all recorded."
                if success
                else "FAILED"
            )
        )
        return 0 if success else 1
    finally:
        if bot is not None:
            bot.stop()
        slack.stop()
        backends.stop()
        tmp.cleanup()


__all__ = ["FakeSlack", "run_demo"]
