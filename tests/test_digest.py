"""The weekly digest: its figures from a seeded history, owed once however many replicas fire,
posted with its chart through files upload v2, and rendered locally by `breakglass digest`."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update
from sqlmodel import select

from bot.cli import main
from bot.sandbox.stack import POLICY, start_bot
from bot.slack.digest import digest_text
from bot.store import AccessRequest, AuditEvent, OutboxEntry, audit
from bot.usecases.digest import build_digest
from bot.usecases.stats import Stats
from tests.helpers import wait_for
from tests.test_stats import NOW, store  # noqa: F401 - the seeded store fixture

PNG = b"\x89PNG\r\n\x1a\n"


def _flag(store_, request_id: int, reason: str) -> None:
    with store_.transaction() as s:
        s.execute(
            update(AccessRequest)
            .where(AccessRequest.id == request_id)
            .values(flags=json.dumps([{"kind": "first_access", "reason": reason}]))
        )


def test_the_digest_of_a_seeded_week(store):  # noqa: F811
    _flag(store, 8, "first access to prod-db-two-keys by this person")
    digest = build_digest(Stats(store, lambda: NOW), NOW, "UTC")
    # Wednesday 10 April 2024: the week is 3 April 00:00 to 10 April 00:00, UTC.
    assert digest.period.start == datetime(2024, 4, 3, tzinfo=UTC)
    assert digest.period.end == datetime(2024, 4, 10, tzinfo=UTC)
    assert digest.previous.start == datetime(2024, 3, 27, tzinfo=UTC)
    # This week: R8 (5 April). The week before: R1 (30 March), R2 (31 March), R3 (2 April).
    assert digest.now.overall.events == 1 and digest.before.overall.events == 3
    assert digest.days == [date(2024, 4, 3) + timedelta(days=i) for i in range(7)]
    assert digest.events_by_resource == {"prod-db-two-keys": [0, 0, 1, 0, 0, 0, 0]}
    assert digest.outside_by_day == [0] * 7
    assert [f.request_id for f in digest.flagged] == [8]
    # Overdue at NOW: R0's review (due 22 March) and R2's (due 2 April); R8's is due later.
    assert sorted(o.request_id for o in digest.overdue) == [2, 10]
    assert digest.chain_ok
    text = digest_text(digest)
    assert "Grants made: *1* (3) ▼" in text
    assert "#8 `prod-db-two-keys`" in text and "first access to prod-db-two-keys" in text
    assert "overdue: #2 `prod-db`" in text
    assert "*Audit chain*: intact" in text


def test_the_week_is_counted_in_the_digest_time_zone(store):  # noqa: F811
    # R2 was granted at 03:30 Paris on 31 March 2024 (01:35 UTC), the night clocks went
    # forward; in Los Angeles that is still 30 March.
    end = datetime(2024, 4, 3, 12, 0, tzinfo=UTC)
    paris = build_digest(Stats(store, lambda: end), end, "Europe/Paris")
    la = build_digest(Stats(store, lambda: end), end, "America/Los_Angeles")
    assert paris.days[-3:] == [date(2024, 3, 31), date(2024, 4, 1), date(2024, 4, 2)]
    assert paris.events_by_resource["prod-db"][paris.days.index(date(2024, 3, 31))] == 1
    assert la.events_by_resource["prod-db"][la.days.index(date(2024, 3, 30))] == 2
    assert paris.outside_by_day[paris.days.index(date(2024, 3, 31))] == 1


def test_breakglass_digest_writes_the_text_and_a_png(
    store,  # noqa: F811
    database_url,
    monkeypatch,
    capsys,
    tmp_path,
):
    monkeypatch.setenv("DATABASE_URL", database_url)
    out = tmp_path / "digest"
    assert main(["digest", "--out", str(out), "--until", "2024-04-10"]) == 0
    printed = capsys.readouterr().out
    chart = out / "breakglass-digest-2024-04-10.png"
    assert f"chart:  {chart}" in printed
    assert chart.read_bytes().startswith(PNG)
    assert "Break-glass digest" in (out / "breakglass-digest-2024-04-10.txt").read_text()
    assert main(["digest", "--out", str(out), "--until", "last week"]) == 2
    assert "is not a time" in capsys.readouterr().err
    assert main(["digest", "--out", str(out), "--timezone", "Mars/Olympus"]) == 2
    assert "unknown time zone" in capsys.readouterr().err


DIGEST_POLICY = POLICY + 'digest:\n  cron: "0 9 * * MON"\n  timezone: Europe/Berlin\n'


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_digest_is_owed_once_by_two_replicas_and_posted_with_its_chart(
    backends, slack, clock, database_url, tmp_path
):
    one = start_bot(
        backends, slack, database_url, clock=clock, workdir=tmp_path, policy_text=DIGEST_POLICY
    )
    two = start_bot(
        backends, slack, database_url, clock=clock, workdir=tmp_path, policy_text=DIGEST_POLICY
    )
    try:
        # Monday 23 November 2026, 09:00 Berlin: both replicas' schedules fire.
        fired = datetime(2026, 11, 23, 8, 0, 3, tzinfo=UTC)
        due = one.service.digests.due(fired)
        assert due == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
        assert two.service.digests.due(fired + timedelta(seconds=40)) == due
        barrier = threading.Barrier(2)
        owed: list[bool] = []

        def owe(replica) -> None:
            barrier.wait()
            owed.append(replica.service.digests.owe(due))

        threads = [threading.Thread(target=owe, args=(r,)) for r in (one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(owed) == [False, True]
        wait_for(lambda: slack.calls_to("files.completeUploadExternal"))
        (file_id,) = slack.files
        assert slack.files[file_id]["data"].startswith(PNG)
        assert slack.files[file_id]["shared"] == "C0SECURITY"
        posted = next(m for m in slack.channel_messages("C0SECURITY") if m.files)
        assert "Break-glass digest" in posted.text and "*Audit chain*: intact" in posted.text
        with one.runtime.store.read() as s:
            assert len(s.exec(select(AuditEvent).where(AuditEvent.action == "digest")).all()) == 1
            entries = s.exec(select(OutboxEntry).where(OutboxEntry.kind == "digest")).all()
            assert len(entries) == 1 and entries[0].done_at is not None
            assert audit.verify(s).ok
        assert len(slack.calls_to("files.completeUploadExternal")) == 1
    finally:
        two.stop()
        one.stop()


def test_a_digest_that_slack_refuses_for_a_while_is_posted_once_it_answers(
    backends, slack, clock, database_url, tmp_path
):
    bot = start_bot(
        backends, slack, database_url, clock=clock, workdir=tmp_path, policy_text=DIGEST_POLICY
    )
    try:
        job = bot.runtime.scheduler.scheduler.get_job("digest")
        nxt = job.next_run_time.astimezone(ZoneInfo("Europe/Berlin"))
        assert (nxt.strftime("%a %H:%M"), job.misfire_grace_time) == ("Mon 09:00", 3600)
        slack.fail("files.getUploadURLExternal", status=500, times=2)
        assert bot.service.digests.owe(datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
        wait_for(lambda: slack.calls_to("files.completeUploadExternal"), timeout=30)
        assert len(slack.calls_to("files.completeUploadExternal")) == 1
    finally:
        bot.stop()
