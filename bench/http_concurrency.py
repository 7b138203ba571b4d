"""`breakglass serve` (gunicorn, threads) under concurrent signed slash commands: does every
ack stay far inside Slack's 3-second rule? Prints p50/p99 per concurrency level.

    .venv/bin/python bench/http_concurrency.py [--requests 400]

Traffic goes to loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bot.sandbox.slack_fake import FakeSlack
from bot.sandbox.stack import REQUESTER, Backends, ServeProcess


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    backends = Backends.start()
    slack = FakeSlack().start()
    served = ServeProcess(backends, slack, Path(tempfile.mkdtemp())).start()
    try:
        driver = served.driver

        def one(text: str) -> float:
            t = time.perf_counter()
            r = driver.command(REQUESTER, text)
            assert r.status_code == 200, r.status_code
            return (time.perf_counter() - t) * 1000

        print(
            f"breakglass serve (gunicorn gthread, 1 worker, 16 threads); {args.requests} "
            "signed commands per row, load generator on the same machine"
        )
        print(f"{'command':<22} {'concurrent':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for text, label in (("help", "/breakglass help"), ("", "/breakglass (modal)")):
            for workers in (1, 10, 50):
                with ThreadPoolExecutor(workers) as pool:
                    ms = sorted(pool.map(one, [text] * args.requests))
                p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
                print(f"{label:<22} {workers:>10} {p50:8.1f} {p99:8.1f} {ms[-1]:8.1f}")
    finally:
        served.stop()
        slack.stop()
        backends.stop()


if __name__ == "__main__":
    main()
