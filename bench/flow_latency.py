"""How long each step of the break-glass flow takes on real parts (OpenBao, PostgreSQL, the bot
over HTTP), and the bot's memory. Prints figures; asserts nothing.

    .venv/bin/python bench/flow_latency.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from bot.sandbox.slack_fake import FakeSlack, request_values
from bot.sandbox.stack import APPROVER, REQUESTER, SECURITY_CHANNEL, Backends, start_bot
from bot.slack.ids import ActionId


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    backends = Backends.start()
    slack = FakeSlack().start()
    tmp = tempfile.TemporaryDirectory()
    bot = start_bot(backends, slack, f"sqlite:///{Path(tmp.name) / 'bench.db'}")
    d = bot.driver
    steps: dict[str, list[float]] = {
        k: [] for k in ("command (ack)", "submit", "approve+issue", "reveal", "revoke")
    }
    try:
        for _ in range(args.rounds):
            t = time.perf_counter()
            d.command(REQUESTER).raise_for_status()
            steps["command (ack)"].append(time.perf_counter() - t)
            view = slack.views_opened()[-1]
            t = time.perf_counter()
            d.submit_view(
                REQUESTER, view, request_values("prod-db", "30m", "benchmarking the flow " * 2)
            ).raise_for_status()
            steps["submit"].append(time.perf_counter() - t)
            parent = [m for m in slack.channel_messages(SECURITY_CHANNEL) if not m.thread_ts][-1]
            t = time.perf_counter()
            d.click(APPROVER, parent, ActionId.APPROVE).raise_for_status()
            steps["approve+issue"].append(time.perf_counter() - t)
            dm = [m for m in slack.dms(REQUESTER) if m.blocks][-1]
            t = time.perf_counter()
            d.click(REQUESTER, dm, ActionId.REVEAL).raise_for_status()
            steps["reveal"].append(time.perf_counter() - t)
            t = time.perf_counter()
            d.click(REQUESTER, dm, ActionId.REVOKE).raise_for_status()
            steps["revoke"].append(time.perf_counter() - t)
        print(f"{args.rounds} full flows, SQLite store, bot over HTTP with process_before_response")
        print(f"{'step':<16} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, values in steps.items():
            ms = [v * 1000 for v in values]
            print(f"{name:<16} {statistics.median(ms):8.1f} {pct(ms, 0.95):8.1f} {max(ms):8.1f}")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process (bot + Slack fake + load driver): {rss:.0f} MiB")
    finally:
        bot.stop()
        slack.stop()
        backends.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
