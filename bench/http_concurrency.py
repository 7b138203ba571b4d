"""`breakglass serve` (gunicorn, threads) under concurrent signed slash commands: does every
ack stay far inside Slack's 3-second rule? Prints p50/p99 per concurrency level, next to the
floor from the same run: a bare Bolt app (bench/bare_bolt.py) that acks `/breakglass` and
opens a one-field modal, served the same way (gunicorn gthread, 1 worker, 16 threads).

    .venv/bin/python bench/http_concurrency.py [--requests 400]

Traffic goes to loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bot.sandbox.openbao import free_port, wait_until_serving
from bot.sandbox.slack_fake import FakeSlack, SlackDriver
from bot.sandbox.stack import REQUESTER, Backends, ServeProcess

BENCH = Path(__file__).resolve().parent


class BareBolt:
    """bench/bare_bolt.py under gunicorn, with the options `breakglass serve` uses."""

    def __init__(self, slack: FakeSlack, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        secret = secrets.token_hex(16)
        self.driver = SlackDriver(self.url, secret, slack)
        self.log_path = workdir / "bare-bolt.log"
        runtime_dir = workdir / "bare-run"  # gunicorn's control socket, ours alone
        runtime_dir.mkdir(mode=0o700)
        self.env = {
            **os.environ,
            "SLACK_SIGNING_SECRET": secret,
            "SLACK_API_URL": slack.api_url,
            "XDG_RUNTIME_DIR": str(runtime_dir),
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> BareBolt:
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        command = [
            gunicorn,
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "16",
            "--timeout",
            "60",
            "--access-logfile",
            "-",
            "--chdir",
            str(BENCH),
            "bare_bolt:create()",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until_serving(self.process, f"{self.url}/healthz", "bare Bolt", 30, log=self.log_path)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    backends = Backends.start()
    slack = FakeSlack().start()
    tmp = tempfile.TemporaryDirectory(prefix="bg-bench-")
    workdir = Path(tmp.name)
    served = ServeProcess(backends, slack, workdir).start()
    bare = BareBolt(slack, workdir)
    try:
        bare.start()

        def one(driver: SlackDriver, text: str) -> float:
            t = time.perf_counter()
            r = driver.command(REQUESTER, text)
            assert r.status_code == 200, r.status_code
            return (time.perf_counter() - t) * 1000

        print(
            f"breakglass serve (gunicorn gthread, 1 worker, 16 threads); {args.requests} "
            "signed commands per row, load generator on the same machine; floor: a bare Bolt "
            "app acking /breakglass and opening a one-field modal, served the same way"
        )
        print(f"{'command':<28} {'concurrent':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        p99_at_50: dict[str, float] = {}
        for driver, text, label in (
            (served.driver, "help", "/breakglass help"),
            (served.driver, "", "/breakglass (modal)"),
            (bare.driver, "", "floor: bare Bolt modal"),
        ):
            for workers in (1, 10, 50):
                with ThreadPoolExecutor(workers) as pool:
                    ms = sorted(pool.map(one, [driver] * args.requests, [text] * args.requests))
                p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
                print(f"{label:<28} {workers:>10} {p50:8.1f} {p99:8.1f} {ms[-1]:8.1f}")
                if workers == 50:
                    p99_at_50[label] = p99
        print(
            f"modal ack p99 at 50 concurrent: bot {p99_at_50['/breakglass (modal)']:.1f} ms | "
            f"floor (bare Bolt) {p99_at_50['floor: bare Bolt modal']:.1f} ms"
        )
    finally:
        bare.stop()
        served.stop()
        slack.stop()
        backends.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
