"""The fault suite's tools do what they claim: the TCP proxy in front of the real OpenBao, the
Slack fake's scripted faults, and slack_sdk's retry handlers against that fake."""

from __future__ import annotations

import contextlib
import threading
import time

import hvac
import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    FixedValueRetryIntervalCalculator,
    RateLimitErrorRetryHandler,
    builtin_handlers,
)
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler

from bot.sandbox.faultproxy import FaultProxy
from bot.sandbox.slack_fake import FakeSlack
from bot.sandbox.stack import APPROVER, REQUESTER, Backends, start_bot
from bot.slack.ids import ActionId
from tests.helpers import click, credential_dm, request_access, reveal

QUICK = FixedValueRetryIntervalCalculator(0.01)


@pytest.fixture
def proxy(vault_proxy: FaultProxy) -> FaultProxy:
    return vault_proxy


def vault(proxy: FaultProxy, backends: Backends, timeout: float = 5) -> hvac.Client:
    return hvac.Client(url=proxy.url, token=backends.bao.root_token, timeout=timeout)


def elapsed(since: float) -> float:
    return time.monotonic() - since


# ---- FaultProxy in front of the real OpenBao ---------------------------------------------


def test_proxy_passes_through_and_keeps_connections_alive(proxy, backends):
    client = vault(proxy, backends)
    for _ in range(3):
        assert client.auth.token.lookup_self()["data"]["id"] == backends.bao.root_token
    assert proxy.accepted == 1, "requests' pool reused one connection through the proxy"


def test_refused_is_a_fast_error_and_restore_brings_it_back(proxy, backends):
    client = vault(proxy, backends)
    client.auth.token.lookup_self()  # a pooled keep-alive connection is open
    proxy.refuse()
    assert proxy.open_connections == 0, "a dead server's connections die with it"
    for _ in range(2):  # the pooled connection, then a new one
        start = time.monotonic()
        with pytest.raises(requests.ConnectionError):
            client.auth.token.lookup_self()
        assert elapsed(start) < 1
    with pytest.raises(requests.ConnectionError, match="refused"):
        requests.get(f"{proxy.url}/v1/sys/health", timeout=5)
    proxy.restore()
    assert client.auth.token.lookup_self()["data"]["id"] == backends.bao.root_token


def test_cut_idle_connections_make_the_pool_reconnect(proxy, backends):
    client = vault(proxy, backends)
    client.auth.token.lookup_self()
    proxy.cut()
    start = time.monotonic()
    assert client.auth.token.lookup_self()["data"]["id"] == backends.bao.root_token
    assert elapsed(start) < 1 and proxy.accepted == 2, "a fresh connection, not a hang"


def test_cut_mid_answer_is_an_error_at_once(proxy, backends):
    client = vault(proxy, backends, timeout=10)
    proxy.slow(10)  # the answer is held in the proxy: the request is in flight
    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            client.auth.token.lookup_self()
            outcome.append(None)
        except requests.RequestException as e:
            outcome.append(e)

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    deadline = time.monotonic() + 5
    while proxy.open_connections == 0:
        assert time.monotonic() < deadline, "the request never reached the proxy"
        time.sleep(0.01)
    start = time.monotonic()
    proxy.cut()
    asking.join(5)
    assert elapsed(start) < 1
    assert isinstance(outcome[0], requests.ConnectionError)


def test_slow_answers_time_out_after_vault_did_the_work(proxy, backends):
    client = vault(proxy, backends, timeout=0.2)
    proxy.slow(0.5)
    with pytest.raises(requests.Timeout):
        client.secrets.kv.v2.create_or_update_secret("fault-probe", secret={"v": "1"})
    # The write went through; only its answer was late. A retry must expect that.
    direct = backends.bao.client()
    assert direct.secrets.kv.v2.read_secret_version("fault-probe", raise_on_deleted_version=True)[
        "data"
    ]["data"] == {"v": "1"}
    proxy.restore()
    assert client.auth.token.lookup_self()


def test_proxy_stops_at_once_with_connections_open(backends):
    proxy = FaultProxy("127.0.0.1", backends.bao.port).start()
    client = vault(proxy, backends)
    client.auth.token.lookup_self()
    proxy.slow(30)
    threading.Thread(target=lambda: _swallow(client), daemon=True).start()
    start = time.monotonic()
    proxy.stop()
    assert elapsed(start) < 0.5 and proxy.open_connections == 0


def _swallow(client: hvac.Client) -> None:
    with contextlib.suppress(requests.RequestException):
        client.auth.token.lookup_self()


def test_a_bot_pointed_at_the_proxy_issues_through_it(backends, slack, vault_proxy, tmp_path):
    bot = start_bot(
        backends,
        slack,
        f"sqlite:///{tmp_path / 'bg.db'}",
        workdir=tmp_path,
        vault_addr=vault_proxy.url,
        start_scheduler=False,
    )
    try:
        click(bot, APPROVER, request_access(bot, slack), ActionId.APPROVE)
        user, password = reveal(bot, slack)
        assert backends.pg.can_login(user, password) and vault_proxy.accepted >= 1
        click(bot, REQUESTER, credential_dm(slack), ActionId.REVOKE)
        assert not backends.pg.can_login(user, password)
    finally:
        bot.stop()


# ---- FakeSlack's faults --------------------------------------------------------------------


def web(slack: FakeSlack, *handlers, timeout: int = 5) -> WebClient:
    return WebClient(
        token="xoxb-test", base_url=slack.api_url, retry_handlers=list(handlers), timeout=timeout
    )


def test_scripted_errors_are_recorded_apart_from_successes(slack):
    client = web(slack)
    slack.fail("chat.postMessage", status=500, times=2)
    slack.fail("chat.postMessage", error="not_in_channel")
    for expected in (500, 500, 200):
        with pytest.raises(SlackApiError) as raised:
            client.chat_postMessage(channel="C0SECURITY", text="hello")
        assert raised.value.response.status_code == expected
    assert raised.value.response["error"] == "not_in_channel"
    assert client.chat_postMessage(channel="C0SECURITY", text="hello")["ok"]
    attempts = slack.attempts_to("chat.postMessage")
    assert [(c.status, c.error, c.ok) for c in attempts] == [
        (500, "internal_error", False),
        (500, "internal_error", False),
        (200, "not_in_channel", False),
        (200, None, True),
    ]
    assert [c.fault for c in attempts] == [
        "HTTP 500 internal_error",
        "HTTP 500 internal_error",
        "not_in_channel",
        None,
    ]
    assert slack.calls_to("chat.postMessage") == attempts[-1:]
    assert len(slack.channel_messages("C0SECURITY")) == 1, "a faulted call does nothing"


def test_views_open_update_and_expired_trigger(slack):
    client = web(slack)
    slack.fail("views.open", error="expired_trigger_id")
    modal = {"type": "modal", "title": {"type": "plain_text", "text": "Revealing…"}}
    with pytest.raises(SlackApiError, match="expired_trigger_id"):
        client.views_open(trigger_id="t1", view=modal)
    opened = client.views_open(trigger_id="t2", view=modal)["view"]
    assert slack.views_opened() == [{**modal, "id": opened["id"]}]
    done = {**modal, "title": {"type": "plain_text", "text": "Credential"}}
    updated = client.views_update(view_id=opened["id"], hash=opened["hash"], view=done)["view"]
    assert slack.view(opened["id"])["title"]["text"] == "Credential"
    with pytest.raises(SlackApiError, match="hash_conflict"):  # the old hash is stale now
        client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal)
    with pytest.raises(SlackApiError, match="not_found"):
        client.views_update(view_id="V0NOSUCH", view=modal)
    assert updated["id"] == opened["id"] and slack.views_updated()[-1]["id"] == opened["id"]


def test_bot_not_in_channel_until_it_joins(slack):
    client = web(slack)
    slack.bot_in_channel = False
    with pytest.raises(SlackApiError, match="not_in_channel"):
        client.chat_postMessage(channel="C0SECURITY", text="alert")
    assert client.chat_postMessage(channel="U0ALICE", text="DMs still work")["ok"]
    assert client.conversations_info(channel="C0SECURITY")["channel"]["is_member"] is False
    assert FakeSlack.BOT_USER not in client.conversations_members(channel="C0SECURITY")["members"]
    client.conversations_join(channel="C0SECURITY")
    assert client.chat_postMessage(channel="C0SECURITY", text="alert")["ok"]
    assert FakeSlack.BOT_USER in client.conversations_members(channel="C0SECURITY")["members"]


def test_a_hung_call_times_out_yet_is_done_and_stop_ends_hangs(slack):
    client = web(slack)
    posted = client.chat_postMessage(channel="C0SECURITY", text="pending")
    slack.hang("chat.update", seconds=0.3)
    with pytest.raises(TimeoutError):
        web(slack, timeout=0.1).chat_update(channel=posted["channel"], ts=posted["ts"], text="x")
    deadline = time.monotonic() + 5
    while not slack.calls_to("chat.update"):  # Slack finishes it after the client gave up
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert slack.parent("C0SECURITY").text == "x"
    slack.hang("chat.update", seconds=60)
    threading.Thread(
        target=lambda: _ignore(lambda: client.chat_update(channel="C", ts="1", text="y")),
        daemon=True,
    ).start()
    while len(slack.attempts_to("chat.update")) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    start = time.monotonic()
    slack.stop()
    assert elapsed(start) < 0.5


def _ignore(call) -> None:
    with contextlib.suppress(Exception):  # the fake went away under it: that is the point
        call()


def test_outage_answers_500_everywhere_until_restored(slack):
    client = web(slack)
    slack.outage()
    for call in (client.auth_test, lambda: client.chat_postMessage(channel="C1", text="t")):
        with pytest.raises(SlackApiError) as raised:
            call()
        assert raised.value.response.status_code == 500
    assert requests.post(f"{slack.url}/respond/U0ALICE/1", json={}, timeout=5).status_code == 500
    slack.outage(False)
    assert client.auth_test()["ok"] and client.chat_postMessage(channel="C1", text="t")["ok"]


# ---- slack_sdk's retry handlers against the fake -------------------------------------------


def test_retry_handlers_get_through_rate_limits_and_server_errors(slack, monkeypatch):
    # The handler sleeps Retry-After plus up to 1 s of jitter; without the jitter this test
    # takes the 2 s the two Retry-After headers ask for, no more.
    monkeypatch.setattr(builtin_handlers.random, "random", lambda: 0.0)
    slack.fail("chat.postMessage", status=429, retry_after=1, times=2)
    slack.fail("chat.postMessage", status=500, times=2)
    client = web(
        slack,
        RateLimitErrorRetryHandler(max_retry_count=4),
        ServerErrorRetryHandler(max_retry_count=4, interval_calculator=QUICK),
    )
    assert client.chat_postMessage(channel="C0SECURITY", text="through")["ok"]
    attempts = slack.attempts_to("chat.postMessage")
    assert [c.status for c in attempts] == [429, 429, 500, 500, 200]
    assert attempts[1].at - attempts[0].at >= 1, "Retry-After was honoured"
    assert len(slack.channel_messages("C0SECURITY")) == 1


def test_retry_handlers_share_one_attempt_count(slack):
    # slack_sdk counts attempts per call, across handlers: after one 500 retried, a
    # RateLimitErrorRetryHandler(max_retry_count=1) has no retry left for a 429. Size each
    # handler's max_retry_count for the sum of the faults in a row it must get through.
    slack.fail("chat.postMessage", status=500)
    slack.fail("chat.postMessage", status=429, retry_after=0)
    client = web(
        slack,
        RateLimitErrorRetryHandler(max_retry_count=1),
        ServerErrorRetryHandler(max_retry_count=1, interval_calculator=QUICK),
    )
    with pytest.raises(SlackApiError) as raised:
        client.chat_postMessage(channel="C0SECURITY", text="lost")
    assert raised.value.response.status_code == 429
    assert len(slack.attempts_to("chat.postMessage")) == 2


def test_connection_error_handler_retries_a_reset(slack):
    slack.drop("chat.postMessage", times=2)
    client = web(slack, ConnectionErrorRetryHandler(max_retry_count=2, interval_calculator=QUICK))
    assert client.chat_postMessage(channel="C0SECURITY", text="again")["ok"]
    assert [c.status for c in slack.attempts_to("chat.postMessage")] == [0, 0, 200]
    with pytest.raises(ConnectionResetError):
        slack.drop("auth.test")
        web(slack).auth_test()


def test_files_upload_v2_reaches_the_fake_in_its_three_steps(slack):
    from slack_sdk import WebClient

    client = WebClient(token="xoxb-sandbox", base_url=slack.api_url)
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 100
    answer = client.files_upload_v2(
        content=png, filename="chart.png", title="Chart", channel="C0SECURITY", initial_comment="hi"
    )
    assert answer["ok"]
    assert [c.method for c in slack.calls] == [
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]
    (file_id,) = slack.files
    assert slack.files[file_id]["data"] == png and slack.files[file_id]["shared"] == "C0SECURITY"
    (message,) = slack.channel_messages("C0SECURITY")
    assert message.text == "hi" and message.files == [file_id]


def test_the_digest_chart_is_a_png(tmp_path):
    from datetime import date, timedelta

    from bot.chart import draw_events_chart

    days = [date(2026, 11, 16) + timedelta(days=i) for i in range(7)]
    path = draw_events_chart(
        days, {"prod-db": [1, 0, 2, 0, 0, 3, 1]}, [0, 1, 0, 0, 0, 2, 0], tmp_path / "c.png"
    )
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" in data[-16:]
