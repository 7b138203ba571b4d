"""Is access revoked on time? `breakglass serve` driven from the outside (signed Slack
requests, a crash, a Vault outage through a TCP proxy) on real OpenBao and PostgreSQL; the
times are the ones the bot recorded (`access_grant.expires_at`, `ended_at`: set when Vault
confirmed). Each figure is printed next to a floor measured in the same run: the bot's own
Vault calls made directly with hvac. Prints figures; asserts nothing.

    .venv/bin/python bench/revocation.py lateness [--grants 200] [--runs 3]
    .venv/bin/python bench/revocation.py restart [--grants 1000]
    .venv/bin/python bench/revocation.py recovery [--grants 100] [--outage 40] [--how revoke]

lateness  N requesters break the glass with durations counted down to one moment, so all N
          grants come due within about 2 s; lateness = ended_at - expires_at. Floor: N child
          tokens issued the same way with hvac, revoked (lease, then token) by a pool of 4
          threads (the bot's scheduler has 4) dispatching each at its own expiry.
restart   N active grants, SIGKILL of the serve process, wait until all are overdue, start it
          again: time until /healthz answers (target 3 s) and until all N are ended. Floor: N
          live child tokens with their leases revoked directly (4 threads).
recovery  The bot's VAULT_ADDR is a FaultProxy in front of OpenBao. N grants, Vault refused,
          every grant revoked by its requester (`/breakglass revoke <id>`; `--how expire`: let
          them come due instead), Vault kept away `--outage` s so retries back off to their cap,
          then restored: time until every pending revocation is done. Bound: the 30 s cap.

Every wait has a deadline; what is still pending at a deadline is printed, not waited for.
Traffic goes to 127.0.0.1 only. Each part takes 1 to 5 minutes.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from benchlib import (
    DirectGrant,
    DirectVault,
    People,
    Row,
    Sandbox,
    by_state,
    converging,
    countdown,
    file_emergencies,
    median_of,
    pct,
    spread,
    wait_until,
)

from bot.sandbox.faultproxy import FaultProxy

BACKOFF_CAP = 30.0  # seconds: the bound on a revocation retry's wait once Vault is back
FLOOR_THREADS = 4  # the bot's APScheduler executor: 4 threads


def healthz(url: str) -> bool:
    """True when GET /healthz answers 200 within 2 s (a request that waits for a booting
    worker is answered the moment it serves)."""
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def pending_note(rows: list[Row]) -> str:
    waiting = [r for r in rows if r.has_grant and not r.ended]
    if not waiting:
        return ""
    ids = ", ".join(f"#{r.request_id}" for r in waiting[:8])
    more = f" and {len(waiting) - 8} more" if len(waiting) > 8 else ""
    return f"not ended at the deadline: {len(waiting)} ({by_state(waiting)}): {ids}{more}"


def floor_issue(
    vault: DirectVault, count: int, due: float | None, outlive: int = 0
) -> list[DirectGrant]:
    """`count` child tokens with a database lease each, issued with 4 threads, each due at
    `due` (epoch seconds; its duration counted down as the bot's are), or in 15 min when None.
    `outlive`: Vault's TTL runs that much past the due time (0: Vault ends it then too)."""

    def one(_: int) -> DirectGrant:
        if due is None:
            return vault.issue(900)
        ttl = max(2, math.ceil(due - time.time()))
        g = vault.issue(ttl + outlive)
        return DirectGrant(g.accessor, g.lease_id, g.expires_at - outlive)

    with ThreadPoolExecutor(FLOOR_THREADS) as pool:
        return list(pool.map(one, range(count)))


def floor_lateness(vault: DirectVault, count: int, outlive: int = 0) -> tuple[list[float], float]:
    """A simple thread-pool revoker: each grant handed to the pool when it is due. Returns
    the lateness of each revocation and how widely the due times were spread."""
    grants = floor_issue(vault, count, time.time() + 5 + count * 0.04, outlive)
    due = [g.expires_at for g in grants]
    late: list[float] = []
    lock = threading.Lock()

    def revoke(g: DirectGrant) -> None:
        vault.revoke(g)
        with lock:
            late.append(time.time() - g.expires_at)

    with ThreadPoolExecutor(FLOOR_THREADS) as pool:
        for g in sorted(grants, key=lambda g: g.expires_at):
            time.sleep(max(0.0, g.expires_at - time.time()))
            pool.submit(revoke, g)
    return late, max(due) - min(due)


# ---- lateness -----------------------------------------------------------------------------


def lateness(sb: Sandbox, count: int, runs: int, grace: float) -> None:
    print(
        f"lateness: {count} emergency grants on prod-db coming due within ~2 s; "
        "lateness = ended_at - expires_at (the bot's DB)"
    )
    print(
        f"floors, with hvac and a pool of {FLOOR_THREADS} threads revoking each when due: "
        "'floor' with Vault's TTL = the grant, as the bot's (Vault ends them at that moment "
        "too, so a revoke may find them gone); 'floor live' with Vault's TTL 60 s longer, so "
        "each revoke drops a live database user"
    )
    vault = sb.direct_vault()
    rate = 0.1  # seconds per grant filed; measured after the first run
    p50s: dict[str, list[float]] = {"bot": [], "floor": [], "floor live": []}
    p99s: dict[str, list[float]] = {k: [] for k in p50s}
    for run in range(1, runs + 1):
        served, db = sb.serve(f"lateness{run}")
        people = People(served, sb.slack)
        prefix = f"U0LATE{run}X"
        expire_at = time.time() + 10 + count * rate * 1.3
        batch = file_emergencies(people, db, prefix, count, countdown(expire_at))
        rate = max(batch.rate, 0.03)
        granted = [r for r in db.rows(prefix) if r.has_grant]
        if not granted:
            print(f"run {run}: no grant was issued ({by_state(db.rows(prefix))}); stopping")
            served.stop()
            return
        expiries = [r.expires_at or 0.0 for r in granted]
        done = wait_until(
            lambda db=db, prefix=prefix: all(r.ended for r in db.rows(prefix) if r.has_grant),
            max(expiries) + grace - time.time(),
            0.25,
        )
        rows = db.rows(prefix)
        served.stop()
        figures = {
            "bot": ([(r.ended_at or 0.0) - (r.expires_at or 0.0) for r in rows if r.ended], 0),
            "floor": floor_lateness(vault, len(granted)),
            "floor live": floor_lateness(vault, len(granted), outlive=60),
        }
        print(
            f"run {run}: {len(batch.users)} filed in {batch.seconds:.1f} s, {len(granted)} "
            f"granted, expiries spread over {max(expiries) - min(expiries):.2f} s"
        )
        for name, (late, due_over) in figures.items():
            ended = f"  ({len(late)} ended)" if name == "bot" else f"  (due over {due_over:.2f} s)"
            print(f"  {name:<10} lateness {spread(late)}{ended}")
            if late:
                p50s[name].append(pct(late, 0.5))
                p99s[name].append(pct(late, 0.99))
        if not done:
            print(f"  TIMEOUT {grace:.0f} s after the last expiry; {pending_note(rows)}")
    print(f"median of {runs} run(s):")
    for name in p50s:
        print(f"  {name:<10} p50 {median_of(p50s[name]):.2f} s, p99 {median_of(p99s[name]):.2f} s")


# ---- restart ------------------------------------------------------------------------------


def restart(sb: Sandbox, count: int, deadline: float) -> None:
    print(f"restart: {count} active grants, SIGKILL, all overdue, start again (1 run)")
    served, db = sb.serve("restart")
    people = People(served, sb.slack)
    prefix = "U0RESTARTX"
    batch = file_emergencies(people, db, prefix, count, converging(count, guess=0.08), timeout=240)
    served.kill()
    rows = [r for r in db.rows(prefix) if r.has_grant]
    active = [r for r in rows if not r.ended]
    print(
        f"filed {len(batch.users)} in {batch.seconds:.1f} s; {len(rows)} granted; "
        f"{len(rows) - len(active)} had already ended before the kill; killed with "
        f"{len(active)} active"
    )
    if not active:
        return
    last = max(r.expires_at or 0.0 for r in active)
    time.sleep(min(120.0, max(0.0, last + 1 - time.time())))
    first = min(r.expires_at or 0.0 for r in active)
    now = time.time()
    print(f"at restart every one is overdue, by {now - last:.1f} to {now - first:.1f} s")
    ids = {r.request_id for r in active}

    def ended(rows: list[Row]) -> list[Row]:
        return [r for r in rows if r.request_id in ids and r.ended]

    healthy: dict[str, object] = {}

    def start() -> None:
        try:
            served.start(deadline)
        except RuntimeError as exc:  # it exited, or never answered (and was killed)
            healthy["error"] = str(exc).splitlines()[0]
            return
        except requests.RequestException:
            # ServeProcess.start gives up when /healthz takes the connection but does not
            # answer within 1 s (the worker still booting); keep asking, with a longer wait.
            if not wait_until(lambda: healthz(served.url), started + deadline - time.time()):
                healthy["error"] = "no answer"
                return
        healthy["at"] = time.time()
        healthy["ended"] = len(ended(db.rows(prefix)))

    started = time.time()
    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    all_done = wait_until(
        lambda: "error" in healthy or len(ended(db.rows(prefix))) == len(ids), deadline, 0.25
    )
    starter.join(max(0.0, started + deadline - time.time()) + 1)
    rows = db.rows(prefix)
    done = ended(rows)
    if "at" in healthy:
        health = float(healthy["at"]) - started  # type: ignore[arg-type]
        print(
            f"  /healthz answered {health:.2f} s after start (target 3 s); "
            f"{healthy['ended']} of {len(ids)} already ended by then"
        )
    else:
        print(f"  /healthz did not answer within {deadline:.0f} s: {healthy.get('error', '')}")
    if done:
        last_end = max(r.ended_at or 0.0 for r in done)
        print(f"  ended {len(done)} of {len(ids)}; the last {last_end - started:.1f} s after start")
    if not all_done or len(done) < len(ids):
        mine = [r for r in rows if r.request_id in ids]
        print(f"  TIMEOUT after {deadline:.0f} s; {pending_note(mine)}")
    log = served.log_text().split("==== started again ====")[-1]
    for line in log.splitlines():
        if any(w in line for w in ("sweep", "TIMEOUT", "Booting worker", "WARNING", "ERROR")):
            print(f"  log: {line.strip()[:160]}")
    served.stop()
    vault = sb.direct_vault()
    live = floor_issue(vault, len(ids), None)
    t = time.monotonic()
    with ThreadPoolExecutor(FLOOR_THREADS) as pool:
        list(pool.map(vault.revoke, live))
    print(
        f"  floor: {len(live)} live child tokens with their leases revoked directly in "
        f"{time.monotonic() - t:.1f} s ({FLOOR_THREADS} threads)"
    )


# ---- recovery -----------------------------------------------------------------------------


def recovery(sb: Sandbox, count: int, outage: float, how: str, deadline: float) -> None:
    print(
        f"recovery: {count} grants, Vault refused (FaultProxy), each "
        f"{'revoked by its requester' if how == 'revoke' else 'coming due'}, Vault away "
        f"{outage:.0f} s, then back (1 run)"
    )
    proxy = FaultProxy("127.0.0.1", sb.backends.bao.port).start()
    try:
        served, db = sb.serve("recovery", vault_addr=proxy.url)
        people = People(served, sb.slack)
        prefix = "U0RECOVERX"
        duration = (lambda: "30m") if how == "revoke" else converging(count, margin=5)
        batch = file_emergencies(people, db, prefix, count, duration)
        granted = [r for r in db.rows(prefix) if r.has_grant and not r.ended]
        print(f"filed {len(batch.users)} in {batch.seconds:.1f} s; {len(granted)} active")
        proxy.refuse()
        if how == "revoke":
            answered = sum(
                people.command(r.requester, f"revoke {r.request_id}").status_code == 200
                for r in granted
            )
            print(f"Vault refused; {answered} of {len(granted)} `/breakglass revoke` acked")
            failing_since = time.time()
        else:
            failing_since = max(r.expires_at or 0.0 for r in granted)
            later = failing_since - time.time()
            print(f"Vault refused; the last grant comes due {later:.1f} s later")
        time.sleep(max(0.0, failing_since + outage - time.time()))
        ids = {r.request_id for r in granted}
        during = [r for r in db.rows(prefix) if r.request_id in ids and r.ended]
        proxy.restore()
        back = time.time()
        print(
            f"Vault back after {back - failing_since:.0f} s of failures; "
            f"{len(during)} recorded as ended while it was away"
        )

        def todo() -> list[Row]:
            return [r for r in db.rows(prefix) if r.request_id in ids and not r.ended]

        all_done = wait_until(lambda: not todo(), deadline, 0.25)
        rows = [r for r in db.rows(prefix) if r.request_id in ids]
        after = [(r.ended_at or 0.0) - back for r in rows if r.ended]
        if after:
            print(
                f"  from Vault back to ended: {spread(after)}; all {len(after)} of {len(ids)} "
                f"done {max(after):.1f} s after it came back (bound: backoff cap "
                f"{BACKOFF_CAP:.0f} s)"
            )
        if not all_done:
            print(f"  TIMEOUT {deadline:.0f} s after Vault came back; {pending_note(rows)}")
        served.stop()
    finally:
        proxy.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("lateness", "restart", "recovery"))
    ap.add_argument("--grants", type=int, help="default 200 / 1000 / 100 by part")
    ap.add_argument("--runs", type=int, default=3, help="lateness: runs (median printed)")
    ap.add_argument("--outage", type=float, default=40.0, help="recovery: seconds Vault is away")
    ap.add_argument("--how", choices=("revoke", "expire"), default="revoke")
    ap.add_argument("--deadline", type=float, help="seconds to wait for the end of a part")
    ap.add_argument("--sqlite", action="store_true", help="the bot on SQLite, not PostgreSQL")
    args = ap.parse_args()
    count = args.grants or {"lateness": 200, "restart": 1000, "recovery": 100}[args.part]
    sb = Sandbox(sqlite=args.sqlite)
    print(f"breakglass serve (gunicorn), {'SQLite' if args.sqlite else 'PostgreSQL'} store")
    try:
        if args.part == "lateness":
            lateness(sb, count, args.runs, args.deadline or 60.0)
        elif args.part == "restart":
            restart(sb, count, args.deadline or 150.0)
        else:
            recovery(sb, count, args.outage, args.how, args.deadline or 90.0)
    finally:
        sb.stop()


if __name__ == "__main__":
    main()
