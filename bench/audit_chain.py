"""How fast is the audit chain verified and appended to, and in how much memory?

A chain of N events (default 1,000,000; details of the usual size) is bulk-inserted into
SQLite and into an embedded PostgreSQL. Then, each in a fresh process so its peak memory is
its own:

- `audit verify` (the function behind `breakglass audit verify`), events/s and the process's
  peak RSS growth, next to its floor in the same run: the same rows read with a plain SQL
  cursor and sha256 over each row's canonical JSON in plain Python;
- appending: events/s through `audit.append` (one transaction per event, as the bot does),
  next to a plain INSERT of the same row per transaction.

Prints figures; asserts nothing.

    .venv/bin/python bench/audit_chain.py [--events 1000000] [--append 2000] [--only sqlite]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from bot import migrate
from bot.sandbox.postgres import EmbeddedPostgres
from bot.store import create_db_engine
from bot.store.audit import GENESIS, canonical, digest, event_hash

ACTIONS = ["requested", "approved", "issued", "revealed", "ending", "expired"]


def fill(engine: sa.Engine, n: int) -> float:
    """A valid chain of `n` events, bulk-inserted; seconds taken."""
    started = time.perf_counter()
    at0 = datetime(2026, 1, 1, tzinfo=UTC)
    prev = GENESIS
    sqlite = engine.dialect.name == "sqlite"
    batch: list[dict] = []
    with engine.begin() as c:
        for seq in range(1, n + 1):
            at = at0 + timedelta(seconds=seq * 3)
            details = canonical(
                {
                    "from": "pending",
                    "to": "approved",
                    "resource": f"resource-{seq % 8}",
                    "justification": "Checkout is down: orders table locked, need to kill it",
                    "approvals": seq % 3,
                }
            )
            h = digest(details)
            action = ACTIONS[seq % len(ACTIONS)]
            new = event_hash(
                seq=seq,
                at=at,
                actor=f"U{seq % 500:06d}",
                action=action,
                request_id=seq // 6,
                details_hash=h,
                prev_hash=prev,
            )
            batch.append(
                {
                    "seq": seq,
                    "at": at.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else at,
                    "actor": f"U{seq % 500:06d}",
                    "action": action,
                    "request_id": seq // 6,
                    "details": details,
                    "details_hash": h,
                    "v": 2,
                    "prev_hash": prev,
                    "hash": new,
                }
            )
            prev = new
            if len(batch) == 5000:
                c.execute(_INSERT, batch)
                batch = []
        if batch:
            c.execute(_INSERT, batch)
        c.execute(sa.text("UPDATE audit_head SET seq = :n, hash = :h"), {"n": n, "h": prev})
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(sa.text("VACUUM ANALYZE audit_event"))
    return time.perf_counter() - started


_INSERT = sa.text(
    "INSERT INTO audit_event (seq, at, actor, action, request_id, details, details_hash, v, "
    "prev_hash, hash) VALUES (:seq, :at, :actor, :action, :request_id, :details, "
    ":details_hash, :v, :prev_hash, :hash)"
)

# Run in a fresh process: one measurement, its wall time and its peak RSS growth (KiB).
_CHILD = r"""
import json, resource, sys, time, hashlib
import sqlalchemy as sa
from bot.store import Store, create_db_engine, audit

url, what = sys.argv[1], sys.argv[2]
engine = create_db_engine(url)
store = Store(engine)
with engine.connect() as c:
    c.execute(sa.text("SELECT 1"))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if what == "verify":
    with store.read() as s:
        result = audit.verify(s)
    assert result.ok, str(result)
    count = result.checked
else:  # the floor: the same rows, sha256 over each row's canonical JSON
    count = 0
    dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode
    with engine.connect().execution_options(stream_results=True, yield_per=10000) as c:
        rows = c.execute(sa.text(
            "SELECT seq, at, actor, action, request_id, details, details_hash, prev_hash, hash "
            "FROM audit_event ORDER BY seq"))
        for row in rows:
            hashlib.sha256(dumps(tuple(row)).encode()).hexdigest()
            count += 1
took = time.perf_counter() - started
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"count": count, "seconds": took, "rss_kib": grown, "peak_kib": peak}))
"""


def child(url: str, what: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, url, what], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def appending(engine: sa.Engine, n: int) -> tuple[float, float]:
    """Events/s through audit.append, one transaction each, and a plain INSERT per
    transaction of the same rows into a scratch table (the floor)."""
    from bot.domain.workflow import Event
    from bot.store import Store, audit

    store = Store(engine)
    details = {"resource": "prod-db", "justification": "Checkout is down", "approvals": 1}
    started = time.perf_counter()
    for _ in range(n):
        with store.transaction() as s:
            audit.append(
                s,
                at=datetime.now(UTC),
                actor="U0BENCH",
                action=Event.REVEALED,
                request_id=1,
                details=details,
            )
    ours = n / (time.perf_counter() - started)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE bench_plain AS SELECT * FROM audit_event WHERE 1 = 0"))
    row = {
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "actor": "U0BENCH",
        "action": "revealed",
        "request_id": 1,
        "details": canonical(details),
        "details_hash": "0" * 64,
        "v": 2,
        "prev_hash": "0" * 64,
        "hash": "0" * 64,
    }
    insert = sa.text(
        "INSERT INTO bench_plain (seq, at, actor, action, request_id, details, details_hash, "
        "v, prev_hash, hash) VALUES (:seq, :at, :actor, :action, :request_id, :details, "
        ":details_hash, :v, :prev_hash, :hash)"
    )
    started = time.perf_counter()
    for i in range(n):
        with engine.begin() as c:
            c.execute(insert, {**row, "seq": i})
    floor = n / (time.perf_counter() - started)
    return ours, floor


def measure(name: str, url: str, n: int, appends: int) -> None:
    engine = create_db_engine(url)
    migrate.upgrade(engine)
    took = fill(engine, n)
    print(f"\n{name}: {n:,} events, loaded in {took:.1f} s")
    ours = child(url, "verify")
    floor = child(url, "floor")
    rate, floor_rate = ours["count"] / ours["seconds"], floor["count"] / floor["seconds"]
    print(
        f"  audit verify: {rate:10,.0f} events/s ({ours['seconds']:.1f} s), "
        f"peak RSS {ours['peak_kib'] / 1024:.0f} MB (+{ours['rss_kib'] / 1024:.0f} MB "
        f"while verifying)   floor (plain cursor + sha256 of each row's JSON): "
        f"{floor_rate:10,.0f} events/s, peak RSS {floor['peak_kib'] / 1024:.0f} MB   "
        f"floor/ours {floor_rate / rate:.2f}x"
    )
    ours_append, floor_append = appending(engine, appends)
    print(
        f"  append: {ours_append:7,.0f} events/s (audit.append, a transaction each)   "
        f"floor (plain INSERT, a transaction each): {floor_append:7,.0f} rows/s"
    )
    engine.dispose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--append", type=int, default=2000)
    p.add_argument("--only", choices=["sqlite", "postgresql"])
    args = p.parse_args()
    if args.only != "postgresql":
        with tempfile.TemporaryDirectory() as tmp:
            measure("SQLite", f"sqlite:///{Path(tmp) / 'chain.db'}", args.events, args.append)
    if args.only != "sqlite":
        pg = EmbeddedPostgres().start()
        try:
            measure("PostgreSQL", pg.create_database("bench_chain"), args.events, args.append)
        finally:
            pg.stop()


if __name__ == "__main__":
    main()
