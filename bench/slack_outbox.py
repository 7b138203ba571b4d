"""Outbox lag: after a Slack outage, how soon does every request filed during it get its status
card in the security channel? `breakglass serve` on real OpenBao and PostgreSQL, the Slack fake
answering HTTP 500 to every call during the outage. Prints figures; asserts nothing.

    .venv/bin/python bench/slack_outbox.py [--requests 50] [--outage 60] [--deadline 120]

A card is posted when Slack accepted a chat.postMessage to the security channel, outside any
thread, whose text names the request ("#12"). Floor, same run: the same number of requests
filed with Slack up, time from each submission to its card. Then Slack goes down, the requests
are filed (each modal submission must still be acked: the card is owed, not lost), Slack
stays down `--outage` s, comes back, and the lag is measured from that moment (target: every
card within a minute). Waits have deadlines; what is missing then is printed.
Traffic goes to 127.0.0.1 only; about 3 minutes.
"""

from __future__ import annotations

import argparse
import re
import time

from benchlib import BotDb, People, Sandbox, accepted, spread, wait_until

from bot.sandbox.slack_fake import FakeSlack
from bot.sandbox.stack import SECURITY_CHANNEL


def cards(slack: FakeSlack, ids: list[int]) -> dict[int, float]:
    """Request id -> when (monotonic) Slack first accepted its status card."""
    wanted = {i: re.compile(rf"#{i}(?![0-9])") for i in ids}
    found: dict[int, float] = {}
    for call in slack.calls_to("chat.postMessage"):
        args = call.args
        if args.get("channel") != SECURITY_CHANNEL or args.get("thread_ts"):
            continue
        text = str(args.get("text") or "")
        for rid, pattern in wanted.items():
            if rid not in found and pattern.search(text):
                found[rid] = call.at
    return found


def request_ids(db: BotDb, prefix: str) -> dict[str, int]:
    return {r.requester: r.request_id for r in db.rows(prefix)}


def file_requests(
    people: People, prefix: str, count: int
) -> tuple[dict[str, float], list[float], int]:
    """`count` requesters each submit the modal (approval needed, 30m). Returns when each was
    submitted (monotonic), the ack times, and how many were not accepted."""
    submitted: dict[str, float] = {}
    acks: list[float] = []
    refused = 0
    for i in range(count):
        user = f"{prefix}{i:04d}"
        t = time.monotonic()
        response = people.submit(user, "30m", emergency=False)
        acks.append(time.monotonic() - t)
        submitted[user] = t
        refused += not accepted(response)
    return submitted, acks, refused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--outage", type=float, default=60.0, help="seconds Slack is down")
    ap.add_argument("--deadline", type=float, default=120.0, help="seconds to wait after it")
    ap.add_argument("--sqlite", action="store_true", help="the bot on SQLite, not PostgreSQL")
    args = ap.parse_args()
    n = args.requests
    sb = Sandbox(sqlite=args.sqlite)
    slack = sb.slack
    try:
        served, db = sb.serve("outbox")
        people = People(served, slack)  # the modal is open before Slack goes down
        print(
            f"breakglass serve (gunicorn), {'SQLite' if args.sqlite else 'PostgreSQL'} store; "
            f"{n} requests filed with Slack up, then {n} during a {args.outage:.0f} s outage"
        )

        submitted, acks, refused = file_requests(people, "U0CALMX", n)
        wait_until(lambda: len(request_ids(db, "U0CALMX")) >= n, 30)
        ids = request_ids(db, "U0CALMX")
        wait_until(lambda: len(cards(slack, list(ids.values()))) >= len(ids), 30)
        posted = cards(slack, list(ids.values()))
        floor = [posted[rid] - submitted[u] for u, rid in ids.items() if rid in posted]
        print(
            f"floor (Slack up): submit ack {spread(acks, 'ms')}; "
            f"submit -> card {spread(floor, 'ms')} ({len(floor)} of {n} cards"
            f"{f', {refused} submissions refused' if refused else ''})"
        )

        slack.outage(True)
        down = time.monotonic()
        attempts_before = len(slack.attempts_to("chat.postMessage"))
        submitted, acks, refused = file_requests(people, "U0OUTAGEX", n)
        print(
            f"during the outage: submit ack {spread(acks, 'ms')}; "
            f"{n - refused} of {n} submissions accepted (modal closed)"
        )
        time.sleep(max(0.0, down + args.outage - time.monotonic()))
        ids = request_ids(db, "U0OUTAGEX")
        tries = len(slack.attempts_to("chat.postMessage")) - attempts_before
        slack.outage(False)
        up = time.monotonic()
        print(
            f"Slack back after {up - down:.0f} s: {len(ids)} of {n} requests recorded, "
            f"{tries} chat.postMessage attempts met the outage"
        )
        complete = wait_until(
            lambda: len(cards(slack, list(ids.values()))) >= len(ids), args.deadline, 0.2
        )
        posted = cards(slack, list(ids.values()))
        lag = [at - up for at in posted.values()]
        if lag:
            print(
                f"  outbox lag after the outage: {spread(lag)}; {len(posted)} of {len(ids)} "
                f"cards, the last {max(lag):.1f} s after Slack came back (target 60 s)"
            )
        if not complete:
            missing = sorted(rid for rid in ids.values() if rid not in posted)
            shown = ", ".join(f"#{rid}" for rid in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            print(
                f"  TIMEOUT {args.deadline:.0f} s after Slack came back: {len(missing)} "
                f"request(s) still without a status card: {shown}{more}"
            )
            tries_after = [
                c
                for c in slack.attempts_to("chat.postMessage")
                if c.at >= up and c.args.get("channel") == SECURITY_CHANNEL
            ]
            print(f"  chat.postMessage attempts to the channel since then: {len(tries_after)}")
    finally:
        sb.stop()


if __name__ == "__main__":
    main()
