"""How long each step of the break-glass flow takes on real parts (OpenBao, PostgreSQL, the bot
over HTTP), and the bot's memory. Prints figures; asserts nothing.

    .venv/bin/python bench/flow_latency.py [--rounds 30]

"approve click -> credential DM" runs from the HTTP click until the Slack fake receives the
requester's credential message, next to its floor from the same run: the bot's Vault
sequence made directly with hvac and the bot's token (child token create, database creds
read, lease renew, wrap), once per round.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from benchlib import DirectVault

from bot.sandbox.slack_fake import FakeSlack, request_values
from bot.sandbox.stack import APPROVER, REQUESTER, SECURITY_CHANNEL, Backends, start_bot
from bot.slack.ids import ActionId


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def poll(produce, timeout: float = 10.0):
    """The first truthy value of `produce()`; the outbox posts on its own thread."""
    deadline = time.monotonic() + timeout
    while not (value := produce()):
        if time.monotonic() > deadline:
            raise SystemExit("the bot did not post in time")
        time.sleep(0.002)
    return value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    backends = Backends.start()
    slack = FakeSlack().start()
    tmp = tempfile.TemporaryDirectory()
    # The outbox on its worker thread, as in production: Slack's card and thread replies do
    # not stand between the approval and the credential DM.
    bot = start_bot(
        backends, slack, f"sqlite:///{Path(tmp.name) / 'bench.db'}", inline_outbox=False
    )
    d = bot.driver
    vault = DirectVault(backends.bao.addr, backends.bot_token)
    to_dm: list[float] = []
    floor: list[float] = []
    steps: dict[str, list[float]] = {
        k: [] for k in ("command (ack)", "submit", "approve+issue", "reveal", "revoke")
    }
    try:
        for round_ in range(args.rounds):
            t = time.perf_counter()
            d.command(REQUESTER).raise_for_status()
            steps["command (ack)"].append(time.perf_counter() - t)
            view = slack.views_opened()[-1]
            t = time.perf_counter()
            d.submit_view(
                REQUESTER, view, request_values("prod-db", "30m", "benchmarking the flow " * 2)
            ).raise_for_status()
            steps["submit"].append(time.perf_counter() - t)
            parent = poll(
                lambda n=round_: [
                    m for m in slack.channel_messages(SECURITY_CHANNEL) if not m.thread_ts
                ][n:]
            )[0]
            seen = len(slack.calls)
            clicked = time.monotonic()
            t = time.perf_counter()
            d.click(APPROVER, parent, ActionId.APPROVE).raise_for_status()
            steps["approve+issue"].append(time.perf_counter() - t)
            dm = next(
                (
                    c
                    for c in slack.calls[seen:]
                    if c.ok
                    and c.method == "chat.postMessage"
                    and c.args.get("channel") == REQUESTER
                    and c.args.get("blocks")
                ),
                None,
            )
            if dm is not None:
                to_dm.append(dm.at - clicked)
            t = time.perf_counter()
            grant = vault.issue(1800)
            floor.append(time.perf_counter() - t)
            vault.revoke(grant)
            dm = poll(lambda: [m for m in slack.dms(REQUESTER) if m.blocks])[-1]
            t = time.perf_counter()
            d.click(REQUESTER, dm, ActionId.REVEAL).raise_for_status()
            steps["reveal"].append(time.perf_counter() - t)
            t = time.perf_counter()
            d.click(REQUESTER, dm, ActionId.REVOKE).raise_for_status()
            steps["revoke"].append(time.perf_counter() - t)
        print(f"{args.rounds} full flows, SQLite store, bot over HTTP, outbox on its own thread")
        print(f"{'step':<16} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, values in steps.items():
            ms = [v * 1000 for v in values]
            print(f"{name:<16} {statistics.median(ms):8.1f} {pct(ms, 0.95):8.1f} {max(ms):8.1f}")
        print(
            f"approve click -> credential DM p50 {statistics.median(to_dm) * 1000:.1f} ms | "
            f"floor (hvac: token create, creds read, lease renew, wrap) p50 "
            f"{statistics.median(floor) * 1000:.1f} ms"
        )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process (bot + Slack fake + load driver): {rss:.0f} MiB")
    finally:
        bot.stop()
        slack.stop()
        backends.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
