"""The fault suite, hostile input: unverified requests cause nothing, and every value a person
(or an attacker with a valid session) can type gets a clear answer, never a 5xx."""

from __future__ import annotations

import copy
import json
import logging
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from bot.sandbox.slack_fake import request_values
from bot.sandbox.stack import APPROVER, REQUESTER, SECURITY_CHANNEL
from bot.slack.ids import ActionId
from bot.store import AccessRequest
from tests.helpers import open_modal, request_access, request_id_of, request_row

pytestmark = pytest.mark.faults

FORM = "application/x-www-form-urlencoded"
HOSTILE = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# What people paste: unicode digits, NUL, huge numbers, markup, very long text.
nasty_text = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "²",
            "①",
            "٣",
            "1²m",
            "99999999999",
            "2147483648",
            "-1",
            "0",
            "#0",
            "\x00",
            "1h\x00",
            "<!channel>",
            "12 13",
            "revoke",
            "1e9",
            " ",
            "9" * 5000,
            "🔥" * 300,
        ]
    ),
)


def no_effects_beyond(slack, calls_before: int) -> list[str]:
    return [c.method for c in slack.calls[calls_before:] if c.method != "auth.test"]


def no_errors_logged(caplog) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# ---- 3. nothing happens before verification ----------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, "command=/breakglass&user_id=U0VICTIM", 401),
        ({"X-Slack-Request-Timestamp": "abc"}, "command=/breakglass&user_id=U0VICTIM", 401),
        ({"X-Slack-Request-Timestamp": "17²"}, "command=/breakglass&user_id=U0VICTIM", 401),
        ({"X-Slack-Request-Timestamp": "1" * 40}, "command=/breakglass&user_id=U0VICTIM", 401),
        ({"X-Slack-Signature": "v0=00"}, "command=/breakglass&user_id=U0VICTIM", 401),
        ({"X-Slack-Signature": ""}, "payload=" + json.dumps({"user": {"id": "U0VICTIM"}}), 401),
    ],
)
def test_unverified_requests_get_401_and_cause_nothing(bot, slack, caplog, headers, body, status):
    import requests

    base = {"Content-Type": FORM, "X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=1"}
    r = requests.post(bot.driver.bot_url, data=body, headers={**base, **headers}, timeout=10)
    assert r.status_code == status
    assert no_effects_beyond(slack, 0) == []
    no_errors_logged(caplog)


@pytest.mark.parametrize(
    "body",
    [
        "payload=%7Bnot-json",
        "payload=" + json.dumps(["a", "list"]),
        "payload=" + json.dumps("a string"),
    ],
)
def test_signed_but_unreadable_bodies_get_400_and_cause_nothing(bot, slack, caplog, body):
    r = bot.driver.post(body, FORM)
    assert r.status_code == 400
    assert no_effects_beyond(slack, 0) == []
    no_errors_logged(caplog)


def test_signed_payload_of_an_unknown_shape_changes_nothing(bot, slack, caplog):
    body = urlencode({"payload": json.dumps({"type": "block_actions", "user": {"id": "U0X"}})})
    r = bot.driver.post(body, FORM)
    assert r.status_code in (200, 404)
    assert "chat.postMessage" not in no_effects_beyond(slack, 0)


# ---- 4. every value a person can type ----------------------------------------------------


@HOSTILE
@given(verb=st.sampled_from(["revoke", "cancel", "", "help", "REVOKE"]), arg=nasty_text)
def test_any_command_text_gets_a_clear_answer(bot, slack, caplog, verb, arg):
    r = bot.driver.command(REQUESTER, f"{verb} {arg}")
    assert r.status_code == 200, r.text
    assert "Something went wrong" not in str([c.args for c in slack.calls])
    no_errors_logged(caplog)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@HOSTILE
@given(
    duration=nasty_text,
    justification=st.one_of(nasty_text, st.just("Checkout is down\x00, need the DB")),
    ticket=st.one_of(st.none(), nasty_text, st.just("T" * 201)),
    resource=st.one_of(st.just("prod-db"), nasty_text),
)
def test_any_request_form_gets_inline_errors_or_is_recorded(
    bot, slack, caplog, duration, justification, ticket, resource
):
    view = open_modal(bot, slack)
    values = request_values(resource, duration, justification, ticket)
    r = bot.driver.submit_view(REQUESTER, view, values)
    assert r.status_code == 200, r.text
    if r.text:
        assert json.loads(r.text)["response_action"] == "errors"
    assert "Something went wrong" not in str([c.args for c in slack.calls])
    no_errors_logged(caplog)
    # Whatever was recorded is what may be recorded: no NUL, within the limits.
    with bot.runtime.store.read() as s:
        for req in s.exec(select(AccessRequest)):
            assert "\x00" not in req.justification and len(req.ticket or "") <= 200
            bot.runtime.service.requests.cancel(
                req.id, req.requester
            ) if req.state == "pending" else None


@HOSTILE
@given(value=st.one_of(nasty_text, st.integers().map(str)))
def test_any_button_value_gets_a_clear_answer(bot, slack, caplog, value):
    cards = [m for m in slack.channel_messages(SECURITY_CHANNEL) if m.thread_ts is None]
    parent = copy.deepcopy(cards[0]) if cards else request_access(bot, slack)
    for block in parent.blocks:
        for element in block.get("elements", []):
            if element.get("action_id") == ActionId.APPROVE:
                element["value"] = value
    r = bot.driver.click(APPROVER, parent, ActionId.APPROVE)
    assert r.status_code == 200, r.text
    assert "Something went wrong" not in str([c.args for c in slack.calls])
    no_errors_logged(caplog)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_ids_beyond_the_database_integer_are_refused_plainly(bot, slack, caplog):
    parent = request_access(bot, slack)
    r = bot.driver.command(REQUESTER, "revoke 2147483648")
    assert r.status_code == 200 and "not a request id" in r.text
    r = bot.driver.command(REQUESTER, "revoke ²")
    assert r.status_code == 200 and "not a request id" in r.text
    assert request_row(bot, request_id_of(parent)).state == "pending"
    no_errors_logged(caplog)


# ---- 6. no secret in any log, HTTP and Socket Mode alike ---------------------------------


def test_socket_mode_payloads_never_reach_the_log_at_debug(bot):
    """A Reveal click over Socket Mode carries the wrapping token in its message; the library
    logs whole messages at DEBUG. With the bot's logging set up, none of it reaches a line."""
    import io

    from slack_sdk import WebClient
    from slack_sdk.socket_mode.builtin.client import SocketModeClient

    from bot.runtime import quiet_secret_loggers

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        quiet_secret_loggers()
        client = SocketModeClient(
            app_token="xapp-1-sandbox",
            web_client=WebClient(base_url="http://127.0.0.1:9/"),
            logger=logging.getLogger("slack_sdk.socket_mode.builtin.client"),
        )
        client.logger.setLevel(logging.DEBUG)  # as an operator chasing a problem might
        secret = "s.WrApPiNgToKeN123"
        message = json.dumps(
            {"envelope_id": "e1", "type": "interactive", "payload": {"message": secret}}
        )
        client._on_message(message)
        logging.getLogger("slack_bolt.App").debug("payload: %s", secret)
        logging.getLogger("bot.test").debug("our own debug line stays")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert secret not in out.getvalue()
    assert "our own debug line stays" in out.getvalue()
