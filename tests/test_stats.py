"""Break-glass metrics: a seeded history with answers worked out by hand, read back through the
use case, `breakglass stats --json`, `/breakglass stats` and GET /metrics, on SQLite and
PostgreSQL. The history spans Europe's change to summer time (2024-03-31): every figure is in
real elapsed time, whatever the wall clocks said."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from bot import cli, migrate
from bot.domain.periods import Period, PeriodError, parse_bound, parse_period
from bot.sandbox.stack import APPROVER, REQUESTER, Clock, start_bot
from bot.store import AccessRequest, Decision, Grant, Review, Store, create_db_engine
from bot.usecases.stats import Stats

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2024, 4, 10, 12, 0, tzinfo=UTC)
PERIOD = Period(datetime(2024, 3, 25, tzinfo=UTC), NOW)
S = timedelta(seconds=1)


def paris(*args: int) -> datetime:
    """A wall-clock time in Paris (CET, then CEST from 2024-03-31 02:00), as UTC."""
    return datetime(*args, tzinfo=PARIS).astimezone(UTC)


def _request(rid: int, user: str, resource: str, state: str, created: datetime, **kw) -> dict:
    return {
        "id": rid,
        "requester": user,
        "resource": resource,
        "state": state,
        "created_at": created,
        "updated_at": created,
        "duration_seconds": 1800,
        "justification": "seeded",
        **kw,
    }


def _grant(rid: int, issued: datetime, lasts: float, ended_after: float | None, how: str | None):
    """A grant of request `rid`: issued, expiring `lasts` s later, ended `ended_after` s after
    its expiry (negative: early) or still live."""
    expires = issued + lasts * S
    return Grant(
        request_id=rid,
        provider="vault-database",
        token_accessor=f"accessor-{rid}",
        issued_at=issued,
        expires_at=expires,
        ended_at=None if ended_after is None else expires + ended_after * S,
        end_reason=how,
    )


def seed(store: Store) -> None:
    """The history (times UTC unless said). R0 is before the period; R7 is still pending.

    prod-db
      R0 U0EVE   approved 30 s, granted 2024-03-20, expired, ended 0.2 s late; review open,
                 due 2024-03-22 (overdue)
      R1 U0ALICE created 23:00 Paris 2024-03-30 (22:00Z), approved after 120 s, granted
                 at +150 s, 1800 s, ended 0.5 s late; inside a window; reviewed (legitimate)
      R2 U0BOB   emergency 03:30 Paris 2024-03-31 (CEST: 01:30Z), granted at +5 s, revoked
                 after 600 s; outside every window; review open, due 2024-04-02 (overdue)
      R3 U0ALICE created 2024-04-02 10:00, approved after 300 s, granted at +310 s, still
                 active at NOW; no window applies
      R4 U0DAN denied · R5 U0DAN timed out · R6 U0BOB approved after 60 s, issue failed
                 (its grant row exists: no event) · R7 U0FRED pending
    prod-db-two-keys
      R8 U0DAN   created 2024-04-05 09:00, approved after 900 s, granted at +905 s, 1800 s,
                 ended 2 s late; inside a window; review open, due 2024-04-11 (not overdue)
      R9 U0DAN   cancelled
    """
    r1 = paris(2024, 3, 30, 23, 0)
    r2 = paris(2024, 3, 31, 3, 30)
    r3 = datetime(2024, 4, 2, 10, 0, tzinfo=UTC)
    r8 = datetime(2024, 4, 5, 9, 0, tzinfo=UTC)
    r0 = datetime(2024, 3, 20, 8, 0, tzinfo=UTC)
    day = timedelta(days=1)
    requests_ = [
        _request(10, "U0EVE", "prod-db", "expired", r0, decided_at=r0 + 30 * S),
        _request(1, "U0ALICE", "prod-db", "expired", r1, decided_at=r1 + 120 * S, window="w"),
        _request(2, "U0BOB", "prod-db", "revoked", r2, emergency=True, decided_at=r2),
        _request(3, "U0ALICE", "prod-db", "active", r3, decided_at=r3 + 300 * S),
        _request(4, "U0DAN", "prod-db", "denied", r3 + day, decided_at=r3 + day + 10 * S),
        _request(5, "U0DAN", "prod-db", "timed_out", r3 + 2 * day),
        _request(6, "U0BOB", "prod-db", "failed", r3 + 3 * day, decided_at=r3 + 3 * day + 60 * S),
        _request(7, "U0FRED", "prod-db", "pending", NOW - timedelta(hours=1)),
        _request(8, "U0DAN", "prod-db-two-keys", "expired", r8, decided_at=r8 + 900 * S),
        _request(9, "U0DAN", "prod-db-two-keys", "cancelled", r8 + day),
    ]
    windows = {10: False, 1: False, 2: True, 3: None, 8: False}
    with store.transaction() as s:
        for row in requests_:
            rid = row["id"]
            s.add(AccessRequest(**row, outside_window=windows.get(rid)))
        s.flush()
        s.add_all(
            [
                _grant(10, r0 + 40 * S, 1800, 0.2, "expired"),
                _grant(1, r1 + 150 * S, 1800, 0.5, "expired"),
                _grant(2, r2 + 5 * S, 3600, -3000, "revoked"),
                _grant(3, r3 + 310 * S, 10 * 86400, None, None),
                _grant(6, r3 + 3 * day + 61 * S, 1800, 0.1, "failed"),
                _grant(8, r8 + 905 * S, 1800, 2.0, "expired"),
                Decision(request_id=1, approver=APPROVER, outcome="approve", decided_at=r1),
                Review(request_id=10, owed_at=r0, due_at=r0 + 2 * day),
                Review(
                    request_id=1,
                    owed_at=r1 + day,
                    due_at=r1 + 3 * day,
                    reviewed_at=datetime(2024, 4, 1, 9, tzinfo=UTC),
                    reviewer=APPROVER,
                    outcome="legitimate",
                ),
                Review(request_id=2, owed_at=r2, due_at=datetime(2024, 4, 2, tzinfo=UTC)),
                Review(request_id=8, owed_at=r8, due_at=datetime(2024, 4, 11, tzinfo=UTC)),
            ]
        )


@pytest.fixture
def store(database_url: str) -> Store:
    engine = create_db_engine(database_url)
    migrate.upgrade(engine)
    s = Store(engine)
    seed(s)
    yield s
    engine.dispose()


# Hand-computed:
# prod-db events R1 (2024-03-30 22:02:30Z), R2 (03-31 01:30:05Z), R3 (04-02 10:05:10Z):
#   mean gap = (2 d 12:02:40 = 216160 s) / 2 = 108080 s
#   sessions: R1 1800.5, R2 600, R3 NOW - issued = 8 d 01:54:50 = 698090 → median 1800.5
#   approve: R1 120, R3 300, R6 60 → median 120
# overall adds R8 (04-05 09:15:05Z): span 6 d - 12:47:25 = 472355 s / 3 = 157451.667
#   approve [60, 120, 300, 900] → 210; sessions [600, 1800.5, 1802, 698090] → 1801.25
PROD_DB = {
    "events": 3,
    "requests": 7,
    "emergency": 1,
    "outcomes": {
        "approved": 2,
        "emergency": 1,
        "denied": 1,
        "timed_out": 1,
        "cancelled": 0,
        "failed": 1,
        "open": 1,
    },
    "mean_time_between_events_seconds": 108080.0,
    "outside_window_share": 0.5,
    "unique_users": 2,
    "median_time_to_approve_seconds": 120.0,
    "median_session_seconds": 1800.5,
    "reviews_open": 2,
    "reviews_overdue": 2,
    "review_outcomes": {"legitimate": 1, "needs_follow_up": 0, "misuse": 0},
}
TWO_KEYS = {
    "events": 1,
    "requests": 2,
    "emergency": 0,
    "outcomes": {
        "approved": 1,
        "emergency": 0,
        "denied": 0,
        "timed_out": 0,
        "cancelled": 1,
        "failed": 0,
        "open": 0,
    },
    "mean_time_between_events_seconds": None,
    "outside_window_share": 0.0,
    "unique_users": 1,
    "median_time_to_approve_seconds": 900.0,
    "median_session_seconds": 1802.0,
    "reviews_open": 1,
    "reviews_overdue": 0,
    "review_outcomes": {"legitimate": 0, "needs_follow_up": 0, "misuse": 0},
}
OVERALL = {
    "events": 4,
    "requests": 9,
    "emergency": 1,
    "outcomes": {
        "approved": 3,
        "emergency": 1,
        "denied": 1,
        "timed_out": 1,
        "cancelled": 1,
        "failed": 1,
        "open": 1,
    },
    "mean_time_between_events_seconds": pytest.approx(472355 / 3, abs=0.01),
    "outside_window_share": pytest.approx(1 / 3, abs=1e-6),
    "unique_users": 3,
    "median_time_to_approve_seconds": 210.0,
    "median_session_seconds": 1801.25,
    "reviews_open": 3,
    "reviews_overdue": 2,
    "review_outcomes": {"legitimate": 1, "needs_follow_up": 0, "misuse": 0},
}


def _close(figures: dict) -> dict:
    """SQLite's julianday() is exact to about 0.1 ms: compare seconds to the millisecond."""
    out = {}
    for k, v in figures.items():
        is_float = isinstance(v, float) and k != "outside_window_share"
        out[k] = pytest.approx(v, abs=0.002) if is_float else v
    return out


def test_every_figure_over_a_period_that_spans_a_dst_change(store):
    report = Stats(store, clock=lambda: NOW).report(PERIOD).to_json()
    assert report["period"] == {
        "start": "2024-03-25T00:00:00+00:00",
        "end": "2024-04-10T12:00:00+00:00",
    }
    assert report["resources"] == {"prod-db": _close(PROD_DB), "prod-db-two-keys": TWO_KEYS}
    assert report["overall"] == _close(OVERALL)


def test_the_period_bounds_are_start_included_end_excluded(store):
    stats = Stats(store, clock=lambda: NOW)
    r1_issued = paris(2024, 3, 30, 23, 2, 30)
    report = stats.report(Period(r1_issued, r1_issued + S)).to_json()
    assert report["overall"]["events"] == 1 and report["overall"]["unique_users"] == 1
    report = stats.report(Period(r1_issued - S, r1_issued)).to_json()
    assert report["overall"]["events"] == 0
    assert report["overall"]["mean_time_between_events_seconds"] is None
    assert report["overall"]["median_session_seconds"] is None
    assert report["overall"]["outside_window_share"] is None


def test_one_resource(store):
    report = Stats(store, clock=lambda: NOW).report(PERIOD, resource="prod-db-two-keys")
    assert report.to_json()["resources"] == {"prod-db-two-keys": TWO_KEYS}
    assert report.to_json()["overall"] == TWO_KEYS
    empty = Stats(store, clock=lambda: NOW).report(PERIOD, resource="nothing-here").to_json()
    assert empty["resources"]["nothing-here"]["events"] == 0
    assert empty["overall"]["requests"] == 0


def test_cli_json_contract(store, database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    # The CLI reads the real clock: a period given in ISO times needs none.
    code = cli.main(
        ["stats", "--since", "2024-03-25", "--until", "2024-04-10T14:00:00+02:00", "--json"]
    )
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"period", "overall", "resources"}
    assert data["period"] == {
        "start": "2024-03-25T00:00:00+00:00",
        "end": "2024-04-10T12:00:00+00:00",
    }
    assert data["overall"]["events"] == 4 and data["overall"]["requests"] == 9
    assert data["resources"]["prod-db"]["outcomes"] == PROD_DB["outcomes"]
    assert data["resources"]["prod-db"]["mean_time_between_events_seconds"] == pytest.approx(
        108080.0, abs=0.002
    )
    for m in (data["overall"], *data["resources"].values()):
        assert {
            "events",
            "requests",
            "emergency",
            "mean_time_between_events_seconds",
            "outside_window_share",
            "unique_users",
            "median_time_to_approve_seconds",
            "median_session_seconds",
            "reviews_open",
            "reviews_overdue",
            "outcomes",
            "review_outcomes",
        } <= set(m)


def test_cli_table_and_bad_input(store, database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert cli.main(["stats", "--since", "2024-03-25", "--until", "2024-04-10T12:00Z"]) == 0
    out = capsys.readouterr().out
    assert "prod-db-two-keys" in out and "events (grants made)" in out
    for bad in (["--since", "yesterdayish"], ["--since", "30"], ["--until", "2024-02-30"]):
        code = cli.main(["stats", *bad])
        err = capsys.readouterr().err
        assert code == 2
        lines = [line for line in err.splitlines() if "breakglass stats:" in line]
        assert len(lines) == 1 and "Traceback" not in err, err


def test_cli_unreadable_database_is_one_line(database_url, monkeypatch, capsys, tmp_path: Path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'never-migrated.db'}")
    assert cli.main(["stats"]) == 1
    err = capsys.readouterr().err
    assert "never-migrated.db: no such file: run `breakglass migrate`" in err
    assert "Traceback" not in err


def test_periods_are_read_in_one_place(database_url):
    assert parse_bound("7d", NOW) == NOW - timedelta(days=7)
    assert parse_bound("1d12h", NOW) == NOW - timedelta(hours=36)
    assert parse_bound("2024-03-31T03:30+02:00", NOW) == datetime(2024, 3, 31, 1, 30, tzinfo=UTC)
    assert parse_bound("2024-03-01", NOW) == datetime(2024, 3, 1, tzinfo=UTC)
    for bad in ("yesterdayish", "30", "²d", "2024-02-30", "", "99999d", "1900-01-01"):
        with pytest.raises(PeriodError):
            parse_bound(bad, NOW)
    with pytest.raises(PeriodError, match="at or after"):
        parse_period("1d", "2d", NOW, "30d")


def _metrics(url: str) -> dict:
    r = requests.get(f"{url}/metrics", timeout=30)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == CONTENT_TYPE_LATEST  # what generate_latest writes
    return {
        s.name + repr(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(r.text)
        for s in f.samples
    }


def test_metrics_and_slack_from_a_running_bot(backends, slack, database_url, tmp_path):
    clock = Clock()
    clock.now = NOW
    # No scheduler: the seeded history must stay as seeded (no sweep expiring R3).
    bot = start_bot(
        backends, slack, database_url, clock=clock, start_scheduler=False, workdir=tmp_path
    )
    try:
        seed(bot.runtime.store)
        m = _metrics(bot.server.url)
        key = lambda name, **labels: name + repr(sorted(labels.items()))  # noqa: E731
        total = "breakglass_requests_total"
        # All time: R0 counts too; R7 is open, not a settled outcome.
        assert m[key(total, resource="prod-db", outcome="approved")] == 3
        assert m[key(total, resource="prod-db", outcome="emergency")] == 1
        assert m[key(total, resource="prod-db", outcome="failed")] == 1
        assert m[key(total, resource="prod-db-two-keys", outcome="cancelled")] == 1
        assert key(total, resource="prod-db", outcome="open") not in m
        assert m[key("breakglass_requests_open", resource="prod-db")] == 1
        assert m[key("breakglass_active_grants", resource="prod-db")] == 1
        assert key("breakglass_active_grants", resource="prod-db-two-keys") not in m
        assert m[key("breakglass_reviews_open")] == 3
        assert m[key("breakglass_reviews_overdue")] == 2
        # Approvals by people, all time: R0 30, R6 60, R1 120, R3 300, R8 900 s.
        approve = "breakglass_time_to_approve_seconds"
        assert m[key(approve + "_count")] == 5
        assert m[key(approve + "_sum")] == pytest.approx(1410, abs=0.01)
        assert m[key(approve + "_bucket", le="30.0")] == 1
        assert m[key(approve + "_bucket", le="120.0")] == 3
        assert m[key(approve + "_bucket", le="600.0")] == 4
        assert m[key(approve + "_bucket", le="+Inf")] == 5
        # Expired grants, late by R0 0.2, R1 0.5, R8 2.0 s (the failed R6 is no expiry).
        late = "breakglass_revocation_lateness_seconds"
        assert m[key(late + "_count")] == 3
        assert m[key(late + "_sum")] == pytest.approx(2.7, abs=0.01)
        assert m[key(late + "_bucket", le="0.25")] == 1
        assert m[key(late + "_bucket", le="1.0")] == 2
        assert m[key(late + "_bucket", le="2.0")] == 3
        assert key("breakglass_vault_errors_total", operation="revoke") in m
        assert key("breakglass_slack_errors_total", effect="card") in m
        assert not [k for k in m if k.startswith(("python_", "process_"))], "own registry"

        # /breakglass stats 7d: since 2024-04-03 12:00, R8 is the one grant made.
        r = bot.driver.command(APPROVER, "stats 7d")
        assert r.status_code == 200
        (text,) = slack.ephemerals(APPROVER)
        assert "Break-glass metrics" in text and "`prod-db-two-keys`" in text
        assert "*1* grants made to 1 people" in text
        assert "Reviews open now: 3 (2 overdue)" in text

        r = bot.driver.command(APPROVER, "stats lastweek")
        assert r.status_code == 200 and "not a time" in r.text
        r = bot.driver.command(REQUESTER, "stats 7d")
        assert r.status_code == 200 and "approvers and reviewers" in r.text
        assert slack.ephemerals(REQUESTER) == []
        r = bot.driver.command(REQUESTER, "help")
        assert "/breakglass stats" in r.text
    finally:
        bot.stop()
