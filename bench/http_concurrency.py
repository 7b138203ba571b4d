"""`breakglass serve` (gunicorn, threads) under concurrent signed slash commands: does every
ack stay far inside Slack's 3-second rule? Prints p50/p99 per concurrency level.

    .venv/bin/python bench/http_concurrency.py [--requests 400]

Traffic goes to loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bot.sandbox.openbao import free_port
from bot.sandbox.slack_fake import FakeSlack, SlackDriver
from bot.sandbox.stack import POLICY, REQUESTER, Backends


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    backends = Backends.start()
    slack = FakeSlack().start()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "breakglass.yml").write_text(POLICY)
    port = free_port()
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": "xoxb-bench",
        "SLACK_SIGNING_SECRET": "bench-secret",
        "SLACK_API_URL": slack.api_url,
        "VAULT_ADDR": backends.bao.addr,
        "VAULT_TOKEN": backends.bot_token,
        "DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
        "BREAKGLASS_CONFIG": str(tmp / "breakglass.yml"),
    }
    exe = str(Path(sys.executable).parent / "breakglass")
    proc = subprocess.Popen(
        [exe, "serve", "--port", str(port), "--host", "127.0.0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        driver = SlackDriver(f"http://127.0.0.1:{port}", "bench-secret", slack)

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
        proc.terminate()
        proc.wait(20)
        slack.stop()
        backends.stop()


if __name__ == "__main__":
    main()
