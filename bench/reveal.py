"""Reveal while Vault is slow: from the requester's click on Reveal to Slack receiving the
views.open of the modal, with every Vault answer held 2 s by a FaultProxy between the bot and
OpenBao. Slack's trigger id lives 3 s, so the modal must open within 3 s of the click.
Floor, same run: the same with Vault answering at once. Prints figures; asserts nothing.

    .venv/bin/python bench/reveal.py [--reveals 20] [--slow 2]

`breakglass serve` on real OpenBao and PostgreSQL; one emergency grant per reveal (a
credential is revealed once). Clicks are sequential; each waits at most 10 s for views.open.
Traffic goes to 127.0.0.1 only; about 2 minutes.
"""

from __future__ import annotations

import argparse
import time

from benchlib import People, Sandbox, button, file_emergencies, spread, wait_until

from bot.sandbox.faultproxy import FaultProxy
from bot.sandbox.slack_fake import FakeSlack, Message

TRIGGER_LIFE = 3.0  # seconds Slack accepts a trigger_id after the click


def credential_message(slack: FakeSlack, user: str) -> Message | None:
    for message in reversed(slack.dms(user)):
        try:
            button(message, "reveal")
        except LookupError:
            continue
        return message
    return None


def reveal_all(people: People, slack: FakeSlack, users: list[str]) -> tuple[list[float], list[str]]:
    """Click Reveal for each user in turn: seconds from click to views.open, and what went
    wrong for the clicks that got no views.open within 10 s."""
    lags: list[float] = []
    misses: list[str] = []
    for user in users:
        message = credential_message(slack, user)
        if message is None:
            misses.append(f"{user}: no credential message")
            continue
        seen = len(slack.attempts_to("views.open"))
        t = time.monotonic()
        people.served.driver.click(user, message, button(message, "reveal"))
        if wait_until(lambda n=seen: len(slack.attempts_to("views.open")) > n, 10, 0.01):
            lags.append(slack.attempts_to("views.open")[seen].at - t)
        else:
            said = slack.ephemerals(user)
            misses.append(f"{user}: no views.open in 10 s ({said[-1][:80] if said else 'silence'})")
    return lags, misses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reveals", type=int, default=20, help="per case")
    ap.add_argument("--slow", type=float, default=2.0, help="seconds each Vault answer is held")
    ap.add_argument("--sqlite", action="store_true", help="the bot on SQLite, not PostgreSQL")
    args = ap.parse_args()
    n = args.reveals
    sb = Sandbox(sqlite=args.sqlite)
    proxy = FaultProxy("127.0.0.1", sb.backends.bao.port).start()
    try:
        served, db = sb.serve("reveal", vault_addr=proxy.url)
        people = People(served, sb.slack)
        prefix = "U0REVEALX"
        batch = file_emergencies(people, db, prefix, 2 * n, lambda: "30m")
        users = batch.users
        wait_until(lambda: all(credential_message(sb.slack, u) for u in users), 30)
        print(
            f"breakglass serve (gunicorn), {'SQLite' if args.sqlite else 'PostgreSQL'} store; "
            f"{len(users)} emergency grants; Reveal clicked once per grant, one at a time"
        )
        print(f"{'case':<34} {'click -> views.open':<40} within {TRIGGER_LIFE:.0f} s")
        for label, delay, group in (
            ("floor: Vault answers at once", 0.0, users[:n]),
            (f"Vault answers in {args.slow:g} s (FaultProxy)", args.slow, users[n:]),
        ):
            if delay:
                proxy.slow(delay)
            else:
                proxy.restore()
            lags, misses = reveal_all(people, sb.slack, group)
            inside = sum(lag <= TRIGGER_LIFE for lag in lags)
            print(f"{label:<34} {spread(lags, 'ms'):<40} {inside} of {len(group)}")
            for miss in misses[:5]:
                print(f"  missing: {miss}")
        proxy.restore()
    finally:
        proxy.stop()
        sb.stop()


if __name__ == "__main__":
    main()
