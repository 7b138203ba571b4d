"""How fast does the audit trail leave the bot? On SQLite and on an embedded PostgreSQL filled
with N events (through the chain's own append):

- `breakglass audit export` throughput (events/s), JSON Lines and CSV, run as the command
  (a process of its own, so its peak memory is measured too), next to the floor measured in
  the same run: the same rows read with a plain SQL cursor and written with json.dumps;
- forwarding lag: events appended at a steady 50/s, each in its own transaction as the bot
  writes them, forwarded by the bot's webhook worker to a receiver on loopback; seconds from
  the commit to the receiver reading the POST, p50 / p99 / max.

Prints figures; asserts nothing.

    .venv/bin/python bench/audit_export.py [N] [--lag-seconds 20] [--only sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from benchlib import spread

from bot import migrate
from bot.domain.workflow import Event
from bot.forward.webhook import WebhookSender
from bot.policy import WebhookSink
from bot.sandbox.postgres import EmbeddedPostgres
from bot.store import Store, audit, create_db_engine
from bot.usecases.forwarding import Forwarder

RATE = 50.0  # events per second in the lag run
SECRET = b"bench-secret-0123456789abcdef"


def fill(store: Store, n: int) -> float:
    """`n` events like the bot's (an actor, an action, a request, a few details), appended in
    batches of 1,000 through `audit.append_many`; seconds taken."""
    started = time.perf_counter()
    t0 = datetime.now(UTC) - timedelta(days=365)
    for first in range(0, n, 1000):
        with store.transaction() as s:
            audit.append_many(
                s,
                [
                    audit.NewEvent(
                        t0 + timedelta(seconds=30 * i),
                        f"U{i % 200:06d}",
                        Event.APPROVED,
                        i // 4 + 1,
                        {"from": "pending", "to": "approved", "resource": "prod-db", "i": i},
                    )
                    for i in range(first, min(n, first + 1000))
                ],
            )
    return time.perf_counter() - started


def export_command(url: str, fmt: str, out: Path) -> tuple[float, int]:
    """`breakglass audit export --format fmt --out out` as a process: (seconds, peak RSS KiB).
    Each run is the only child alive, so RUSAGE_CHILDREN's maximum is its peak."""
    env = {**os.environ, "DATABASE_URL": url}
    code = (
        "import resource, sys, time\n"
        "from bot.cli import main\n"
        # What the command imports lazily, imported before the clock starts: measured is
        # the export, not the interpreter's start.
        "import bot.store.audit_stream, bot.domain.periods, bot.usecases.ports, bot.settings\n"
        "t = time.perf_counter(); rc = main(sys.argv[1:]); took = time.perf_counter() - t\n"
        "print(took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "audit", "export", "--format", fmt, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    took, rss = done.stderr.strip().splitlines()[-1].split()
    return float(took), int(rss)


def floor(engine: sa.Engine, out: Path) -> float:
    """The same rows through a plain cursor, each written with json.dumps: seconds."""
    started = time.perf_counter()
    with engine.connect() as c, out.open("w") as f:
        result = c.execution_options(stream_results=True, yield_per=2000).execute(
            sa.text(
                "SELECT seq, at, actor, action, request_id, details, prev_hash, hash "
                "FROM audit_event ORDER BY seq"
            )
        )
        for seq, at, actor, action, rid, details, prev, hash_ in result:
            f.write(
                json.dumps(
                    {
                        "seq": seq,
                        "at": str(at),
                        "actor": actor,
                        "action": action,
                        "request_id": rid,
                        "details": json.loads(details) if details is not None else None,
                        "prev_hash": prev,
                        "hash": hash_,
                    }
                )
                + "\n"
            )
    return time.perf_counter() - started


class Receiver:
    """A webhook on loopback that notes when each event's POST was read."""

    def __init__(self) -> None:
        self.received: dict[int, float] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real SIEM endpoint

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                now = time.time()
                for event in json.loads(body):
                    receiver.received.setdefault(event["seq"], now)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def lag(store: Store, seconds: float) -> list[float]:
    """Commit-to-receipt seconds of events appended at RATE per second for `seconds`."""
    receiver = Receiver()
    sink = WebhookSender(WebhookSink(url=receiver.url, secret_env="UNUSED"), SECRET)  # noqa: S106
    forwarder = Forwarder(store, "bench", sink, start="now")
    forwarder.start()
    committed: dict[int, float] = {}
    count = int(seconds * RATE)
    started = time.monotonic()
    for i in range(count):
        wait = started + i / RATE - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        with store.transaction() as s:
            (event,) = audit.append_many(
                s,
                [audit.NewEvent(datetime.now(UTC), "U0BENCH", Event.REQUESTED, i, {"i": i})],
            )
            seq = event.seq
        committed[seq] = time.time()
        forwarder.wake()  # as Core.on_audit does after the commit
    deadline = time.monotonic() + 30
    while len(receiver.received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    forwarder.stop()
    receiver.stop()
    return [receiver.received[s] - committed[s] for s in committed if s in receiver.received]


def measure(name: str, url: str, n: int, lag_seconds: float, tmp: Path) -> None:
    engine = create_db_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    took = fill(store, n)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(sa.text("VACUUM ANALYZE audit_event"))
    print(f"\n{name}: {n} events appended in {took:.1f} s ({n / took:,.0f} events/s)")
    floor_s = min(floor(engine, tmp / "floor.jsonl") for _ in range(2))
    print(f"  floor (plain cursor + json.dumps): {n / floor_s:>9,.0f} events/s")
    for fmt in ("jsonl", "csv"):
        runs = [export_command(url, fmt, tmp / f"out.{fmt}") for _ in range(2)]
        best = min(t for t, _ in runs)
        rss = max(r for _, r in runs)
        lines = sum(1 for _ in (tmp / f"out.{fmt}").open())
        print(
            f"  audit export --format {fmt:<5}: {n / best:>9,.0f} events/s "
            f"(the floor is {best / floor_s:.2f}x as fast; "
            f"peak RSS {rss / 1024:.0f} MiB; {lines} lines)"
        )
    samples = lag(store, lag_seconds)
    print(
        f"  forwarding lag at {RATE:.0f} events/s for {lag_seconds:.0f} s "
        f"({len(samples)} of {int(lag_seconds * RATE)} received): {spread(samples, 'ms')}"
    )
    engine.dispose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("events", nargs="?", type=int, default=100_000)
    p.add_argument("--lag-seconds", type=float, default=20.0)
    p.add_argument("--only", choices=["sqlite", "postgresql"])
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bg-export-") as tmp_name:
        tmp = Path(tmp_name)
        if args.only != "postgresql":
            measure("SQLite", f"sqlite:///{tmp / 'audit.db'}", args.events, args.lag_seconds, tmp)
        if args.only != "sqlite":
            pg = EmbeddedPostgres().start()
            try:
                url = pg.create_database("bench_audit_export")
                measure("PostgreSQL", url, args.events, args.lag_seconds, tmp)
            finally:
                pg.stop()


if __name__ == "__main__":
    main()
