"""How long do the break-glass metrics take on a year of history? 100,000 requests (with their
grants, decisions' times and reviews) bulk-inserted into SQLite and into an embedded PostgreSQL,
then timed: `breakglass stats` (the use case, every figure, per resource and overall) over
30 days and over the whole year, next to the floor measured in the same run (the counts of
that report written as one plain SQL query, no medians), and one /metrics scrape (the
collector called directly). Target: stats under 1 s. Prints figures; asserts nothing.

    .venv/bin/python bench/stats.py [--requests 100000] [--runs 5] [--only sqlite]

Unlike the other benches this one calls the use case itself: what is measured is the
database work behind the command, not a process starting.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from bot import metrics, migrate
from bot.domain.periods import Period
from bot.sandbox.postgres import EmbeddedPostgres
from bot.store import Store, create_db_engine
from bot.usecases.stats import Stats

RESOURCES = [f"resource-{i}" for i in range(8)]
USERS = [f"U{i:06d}" for i in range(200)]
YEAR = timedelta(days=365)
# Terminal outcomes only: the database allows one open request per person and resource.
STATES = [("expired", 56), ("revoked", 14), ("denied", 10), ("timed_out", 10), ("cancelled", 7)]
STATES += [("failed", 3)]


def history(n: int, now: datetime, seed: int = 6) -> tuple[list[dict], list[dict], list[dict]]:
    """Requests, grants and reviews: a year of break-glass use with the usual shapes."""
    rnd = random.Random(seed)
    names, weights = zip(*STATES, strict=True)
    reqs, grants, reviews = [], [], []
    for rid in range(1, n + 1):
        created = now - YEAR + timedelta(seconds=rnd.uniform(0, YEAR.total_seconds()))
        state = rnd.choices(names, weights)[0]
        emergency = state in ("expired", "revoked") and rnd.random() < 0.1
        decided = None
        if state in ("expired", "revoked", "failed", "denied"):
            decided = created + timedelta(seconds=5 if emergency else rnd.expovariate(1 / 240))
        reqs.append(
            {
                "id": rid,
                "requester": rnd.choice(USERS),
                "resource": rnd.choice(RESOURCES),
                "duration_seconds": 1800,
                "justification": "bench",
                "emergency": emergency,
                "state": state,
                "created_at": created,
                "updated_at": created,
                "decided_at": decided,
                "outside_window": rnd.choice([None, False, False, True]),
            }
        )
        if state in ("expired", "revoked", "failed"):
            issued = decided + timedelta(seconds=2)  # type: ignore[operator]
            expires = issued + timedelta(minutes=30)
            ended = expires + timedelta(seconds=rnd.uniform(0, 1.5))
            if state == "revoked":
                ended = issued + timedelta(seconds=rnd.uniform(60, 1700))
            grants.append(
                {
                    "request_id": rid,
                    "provider": "vault-database",
                    "token_accessor": f"acc-{rid}",
                    "issued_at": issued,
                    "expires_at": expires,
                    "ended_at": ended,
                    "end_reason": state,
                }
            )
            if emergency or rnd.random() < 0.1:
                done = rnd.random() < 0.8
                reviews.append(
                    {
                        "request_id": rid,
                        "owed_at": ended,
                        "due_at": ended + timedelta(hours=48),
                        "reviewed_at": ended + timedelta(hours=20) if done else None,
                        "outcome": rnd.choice(["legitimate", "needs_follow_up"]) if done else None,
                    }
                )
    return reqs, grants, reviews


def load(engine: sa.Engine, rows: tuple[list[dict], list[dict], list[dict]]) -> float:
    """Bulk insert (executemany, in batches); seconds taken."""
    from bot.store import AccessRequest, Grant, Review

    started = time.perf_counter()
    with engine.begin() as c:
        for table, data in zip((AccessRequest, Grant, Review), rows, strict=True):
            for i in range(0, len(data), 5000):
                c.execute(sa.insert(table.__table__), data[i : i + 5000])  # type: ignore[attr-defined]
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(sa.text("ANALYZE"))
    return time.perf_counter() - started


FLOOR = """
SELECT r.resource,
       count(*) AS requests,
       sum(CASE WHEN r.state IN ('active','ending','expired','revoked') AND r.emergency
                THEN 1 ELSE 0 END) AS emergency,
       sum(CASE WHEN r.state = 'denied' THEN 1 ELSE 0 END) AS denied,
       sum(CASE WHEN r.state = 'timed_out' THEN 1 ELSE 0 END) AS timed_out,
       sum(CASE WHEN r.state = 'cancelled' THEN 1 ELSE 0 END) AS cancelled,
       sum(CASE WHEN r.state = 'failed' THEN 1 ELSE 0 END) AS failed,
       count(g.id) AS events,
       min(g.issued_at) AS first_event,
       max(g.issued_at) AS last_event,
       count(DISTINCT CASE WHEN g.id IS NOT NULL THEN r.requester END) AS users,
       sum(CASE WHEN g.id IS NOT NULL AND r.outside_window THEN 1 ELSE 0 END) AS outside
FROM access_request r
LEFT JOIN access_grant g
       ON g.request_id = r.id AND r.state IN ('active','ending','expired','revoked')
      AND g.issued_at >= :start AND g.issued_at < :end
WHERE r.created_at >= :start AND r.created_at < :end
GROUP BY r.resource
"""


def timed(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of `runs` calls, after one warm-up."""
    fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(name: str, url: str, n: int, runs: int, now: datetime) -> None:
    engine = create_db_engine(url)
    migrate.upgrade(engine)
    took = load(engine, history(n, now))
    stats = Stats(Store(engine), clock=lambda: now)
    registry = metrics.registry_for(stats)
    print(f"\n{name}: {n} requests over a year, loaded in {took:.1f} s")
    for label, days in (("30 days", 30), ("365 days", 365)):
        period = Period(now - timedelta(days=days), now)
        params = {"start": period.start, "end": period.end}
        if engine.dialect.name == "sqlite":  # SQLite compares the stored text
            params = {k: v.strftime("%Y-%m-%d %H:%M:%S.%f") for k, v in params.items()}

        def floor(params: dict = params) -> None:
            with engine.connect() as c:
                c.execute(sa.text(FLOOR), params).all()

        report = stats.report(period)
        use_case = timed(lambda period=period: stats.report(period), runs)
        print(
            f"  stats over {label:>8} ({report.overall.requests:>6} requests, "
            f"{report.overall.events:>5} events): {use_case * 1000:7.1f} ms   "
            f"floor (one SQL query, no medians): {timed(floor, runs) * 1000:7.1f} ms"
        )
    scrape = timed(lambda: metrics.exposition(registry), runs)
    print(f"  /metrics scrape (all time): {scrape * 1000:7.1f} ms")
    engine.dispose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--only", choices=["sqlite", "postgresql"])
    args = p.parse_args()
    now = datetime.now(UTC)
    if args.only != "postgresql":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'stats.db'}"
            measure("SQLite", url, args.requests, args.runs, now)
    if args.only != "sqlite":
        pg = EmbeddedPostgres().start()
        try:
            measure("PostgreSQL", pg.create_database("bench_stats"), args.requests, args.runs, now)
        finally:
            pg.stop()


if __name__ == "__main__":
    main()
