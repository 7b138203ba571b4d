"""Steps of the Slack conversation, as a person does them, for the tests."""

from __future__ import annotations

import copy
import re
import time

from sqlmodel import select

from bot.sandbox.slack_fake import FakeSlack, Message, request_values, revealed
from bot.sandbox.stack import REQUESTER, SECURITY_CHANNEL, Bot
from bot.slack.ids import ActionId, BlockId
from bot.store import AccessRequest

JUSTIFICATION = "Checkout is down: orders table locked, need to kill the blocking session."


def wait_for(produce, timeout: float = 15.0):
    """The first truthy value `produce()` returns, polling until `timeout`; for work the bot
    does after its ack (the production configuration). Fails the test on time-out."""
    deadline = time.monotonic() + timeout
    while True:
        value = produce()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing came within {timeout} s")
        time.sleep(0.02)


def open_modal(bot: Bot, slack: FakeSlack, user: str = REQUESTER) -> dict:
    r = bot.driver.command(user)
    assert r.status_code == 200, r.text
    return slack.views_opened()[-1]


def request_access(
    bot: Bot,
    slack: FakeSlack,
    *,
    resource: str = "prod-db",
    duration: str = "30m",
    justification: str = JUSTIFICATION,
    ticket: str | None = "INC-4711",
    emergency: bool = False,
    user: str = REQUESTER,
) -> Message:
    """Type /breakglass, fill in the modal, submit; return the parent message it made."""
    view = open_modal(bot, slack, user)
    before = len(slack.channel_messages(SECURITY_CHANNEL))
    r = bot.driver.submit_view(
        user, view, request_values(resource, duration, justification, ticket, emergency)
    )
    assert r.status_code == 200, r.text
    assert r.text == "", f"the modal was refused: {r.text}"
    new = [m for m in slack.channel_messages(SECURITY_CHANNEL)[before:] if m.thread_ts is None]
    assert len(new) == 1
    # As first posted: a person may still click a button of this stale copy.
    return copy.deepcopy(new[0])


def current(slack: FakeSlack, parent: Message) -> Message:
    """The parent message as it is now (after chat.update)."""
    return next(m for m in slack.channel_messages(parent.channel) if m.ts == parent.ts)


def thread_texts(slack: FakeSlack, parent: Message) -> list[str]:
    return [m.text for m in slack.thread(parent.channel, parent.ts)]


def click(bot: Bot, user: str, message: Message, action: ActionId) -> None:
    r = bot.driver.click(user, message, action)
    assert r.status_code == 200, r.text


def credential_dm(slack: FakeSlack, user: str = REQUESTER) -> Message:
    """The requester's credential message as it is now (after a reveal: Revoke now only)."""
    return next(
        m
        for m in reversed(slack.dms(user))
        if any(b.get("block_id") == BlockId.CREDENTIAL_ACTIONS for b in m.blocks)
    )


def reveal(bot: Bot, slack: FakeSlack, user: str = REQUESTER) -> tuple[str, str]:
    """Click Reveal; read the username and password from the modal, as it ends up after the
    bot updated its "Revealing…" window."""
    opened = len(slack.views_opened())
    click(bot, user, credential_dm(slack, user), ActionId.REVEAL)
    views = slack.views_opened()
    assert len(views) == opened + 1, f"no reveal modal; ephemerals: {slack.ephemerals()}"
    shown = revealed_fields(slack, views[-1]["id"])
    return shown["username"], shown["password"]


def revealed_fields(slack: FakeSlack, view_id: str) -> dict[str, str]:
    """The fields the reveal modal `view_id` shows now (after "Revealing…")."""
    fields = revealed(slack, view_id)
    assert fields, f"no credential in the modal; updates: {slack.views_updated()}"
    return fields


def request_row(bot: Bot, request_id: int) -> AccessRequest:
    with bot.runtime.store.read() as s:
        return s.exec(select(AccessRequest).where(AccessRequest.id == request_id)).one()


def request_id_of(parent: Message) -> int:
    return int(re.search(r"#(\d+)", parent.text).group(1))


def tamper(engine, sql: str, **params: object) -> None:
    """Change the audit tables behind the bot's back, as the database's owner can: the
    append-only triggers switched off first (what must catch this is the chain and its
    anchors, not the triggers)."""
    from sqlalchemy import text

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER USER"))
            conn.execute(text("ALTER TABLE audit_head DISABLE TRIGGER USER"))
        else:
            rows = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            for (name,) in rows.all():
                conn.execute(text(f'DROP TRIGGER "{name}"'))
        conn.execute(text(sql), params)
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_event ENABLE TRIGGER USER"))
            conn.execute(text("ALTER TABLE audit_head ENABLE TRIGGER USER"))
