"""What the bench scripts share: percentiles, waits that always end, read-only SQL on the bot's
database, break-glass requests made from the outside (signed Slack requests to `breakglass
serve`), and the floor: the bot's Vault calls made directly with hvac.

Nothing here imports the bot's internals (use cases, Slack adapter, store): the scripts drive
the bot as Slack, Vault and an operator would, so they keep working while those are rewritten.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hvac
import requests
import sqlalchemy as sa

from bot.sandbox.slack_fake import FakeSlack, Message, request_values
from bot.sandbox.stack import REQUESTER, Backends, ServeProcess

JUSTIFICATION = "benchmark: measuring the bot from the outside"
RESOURCE = "prod-db"  # emergency allowed, up to 1 h, in the sandbox policy
DB_ROLE = "breakglass-rw"  # its Vault database role


# ---- figures ------------------------------------------------------------------------------


def pct(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: list[float], unit: str = "s") -> str:
    """ "p50 / p99 / max" of `values` (seconds), printed in `unit` (s or ms)."""
    if not values:
        return "no samples"
    k = 1000.0 if unit == "ms" else 1.0
    p50, p99, top = (pct(values, 0.5) * k, pct(values, 0.99) * k, max(values) * k)
    digits = 0 if unit == "ms" and top >= 100 else 1 if unit == "ms" else 2
    return f"p50 {p50:.{digits}f} / p99 {p99:.{digits}f} / max {top:.{digits}f} {unit}"


def median_of(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def wait_until(check: Callable[[], bool], timeout: float, every: float = 0.1) -> bool:
    """Poll `check` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


def utc(value: datetime | str | None) -> datetime | None:
    """A timestamp read back from the bot's database, timezone-aware UTC (SQLite keeps none)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---- the bot's database, read only ----------------------------------------------------------

_REQUEST = sa.table(
    "access_request",
    sa.column("id", sa.Integer),
    sa.column("requester", sa.String),
    sa.column("state", sa.String),
)
_GRANT = sa.table(
    "access_grant",
    sa.column("request_id", sa.Integer),
    sa.column("issued_at", sa.DateTime(timezone=True)),
    sa.column("expires_at", sa.DateTime(timezone=True)),
    sa.column("ended_at", sa.DateTime(timezone=True)),
)
# Requests that still wait for their grant (emergency ones pass through both on the way).
_UNSETTLED = ("pending", "approved")


@dataclass(frozen=True)
class Row:
    """One request and, once issued, its grant's times (epoch seconds, bot's clock)."""

    request_id: int
    requester: str
    state: str
    issued_at: float | None
    expires_at: float | None
    ended_at: float | None

    @property
    def has_grant(self) -> bool:
        return self.expires_at is not None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


def _epoch(value: Any) -> float | None:
    moment = utc(value)
    return moment.timestamp() if moment is not None else None


class BotDb:
    """Read-only SQL on the bot's database (`access_request`, `access_grant`): the times the
    bot itself recorded. Its rows are found by requester prefix, one per bench part."""

    def __init__(self, url: str):
        if url.startswith("sqlite"):
            path = url.removeprefix("sqlite:///")
            self.engine = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
        else:
            self.engine = sa.create_engine(
                url,
                connect_args={"options": "-c default_transaction_read_only=on"},
                pool_size=2,
            )

    def rows(self, prefix: str) -> list[Row]:
        query = (
            sa.select(
                _REQUEST.c.id,
                _REQUEST.c.requester,
                _REQUEST.c.state,
                _GRANT.c.issued_at,
                _GRANT.c.expires_at,
                _GRANT.c.ended_at,
            )
            .select_from(
                _REQUEST.outerjoin(_GRANT, _GRANT.c.request_id == _REQUEST.c.id),
            )
            .where(_REQUEST.c.requester.like(prefix + "%"))
            .order_by(_REQUEST.c.id)
        )
        with self.engine.connect() as c:
            return [
                Row(r[0], r[1], r[2], _epoch(r[3]), _epoch(r[4]), _epoch(r[5]))
                for r in c.execute(query)
            ]

    def settled(self, prefix: str) -> tuple[int, int]:
        """(requests filed, requests past issuing: with a grant, or refused or failed)."""
        rows = self.rows(prefix)
        return len(rows), sum(1 for r in rows if r.has_grant or r.state not in _UNSETTLED)

    def close(self) -> None:
        self.engine.dispose()


def by_state(rows: Iterable[Row]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        key = r.state + ("" if r.has_grant else " (no grant)")
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"


# ---- requests made as people make them ------------------------------------------------------


def button(message: Message, name: str) -> str:
    """The action_id of the button in `message` whose id ends with `name` ("reveal")."""
    for block in message.blocks:
        for el in block.get("elements", []) if block.get("type") == "actions" else []:
            if str(el.get("action_id", "")).endswith(name):
                return str(el["action_id"])
    raise LookupError(f"no {name!r} button in the message")


class People:
    """Files break-glass requests as people do: `/breakglass` opens the modal, the person
    submits it (a signed view_submission). The modal is opened once and reused: under the
    sandbox policy it is the same for everyone."""

    def __init__(self, served: ServeProcess, slack: FakeSlack, timeout: float = 15):
        self.served, self.slack = served, slack
        opened = len(slack.views_opened())
        served.driver.command(REQUESTER).raise_for_status()
        if not wait_until(lambda: len(slack.views_opened()) > opened, timeout, 0.02):
            raise RuntimeError("the bot opened no request modal within 15 s of /breakglass")
        self.view = slack.views_opened()[-1]

    def submit(self, user: str, duration: str, *, emergency: bool) -> requests.Response:
        values = request_values(RESOURCE, duration, JUSTIFICATION, emergency=emergency)
        return self.served.driver.submit_view(user, self.view, values)

    def command(self, user: str, text: str) -> requests.Response:
        return self.served.driver.command(user, text)


def accepted(response: requests.Response) -> bool:
    """A modal submission Slack would close: HTTP 200 and no field errors."""
    return response.status_code == 200 and "errors" not in (response.text or "")


@dataclass
class Batch:
    users: list[str]
    seconds: float  # from the first submission until the last grant settled
    refused: int  # submissions answered with field errors or an HTTP error
    complete: bool  # every submission settled before the deadline

    @property
    def rate(self) -> float:
        """Seconds per grant."""
        return self.seconds / max(1, len(self.users))


def file_emergencies(
    people: People,
    db: BotDb,
    prefix: str,
    count: int,
    duration: Callable[[], str | None],
    *,
    window: int = 8,
    timeout: float = 240,
) -> Batch:
    """`count` distinct requesters (`prefix` + a number) each break the glass on prod-db.
    `duration()` is asked just before each submission (None: stop filing). At most `window`
    requests are in flight (filed, not yet issued), so each is issued right after it is
    filed and a duration counted down to a common deadline stays true."""
    start = time.monotonic()
    deadline = start + timeout
    users: list[str] = []
    refused = 0
    for i in range(count):
        while time.monotonic() < deadline:
            filed, settled = db.settled(prefix)
            if filed - settled < window:
                break
            time.sleep(0.02)
        text = duration()
        if text is None or time.monotonic() >= deadline:
            break
        user = f"{prefix}{i:05d}"
        if not accepted(people.submit(user, text, emergency=True)):
            refused += 1
        users.append(user)
    complete = wait_until(
        lambda: db.settled(prefix)[1] >= len(users) - refused,
        max(0.0, deadline - time.monotonic()),
        0.05,
    )
    return Batch(users, time.monotonic() - start, refused, complete)


def countdown(expire_at: float, minimum: float = 5.0) -> Callable[[], str | None]:
    """Durations that all end at `expire_at` (epoch seconds): each asks for what is left,
    rounded up to whole seconds ("37s"); None once less than `minimum` is left."""

    def duration() -> str | None:
        left = expire_at - time.time()
        return None if left < minimum else f"{math.ceil(left)}s"

    return duration


def converging(count: int, *, margin: float = 8.0, guess: float = 0.1) -> Callable[[], str]:
    """Durations for `count` grants filed one after another such that each outlives the filing
    of the last by about `margin` seconds: each asks for the filing time still to come (from
    the rate so far, `guess` seconds per grant until 20 are filed, with a third more for
    safety) plus `margin`. So they all come due shortly after the last one is filed."""
    t0: list[float] = []

    def duration() -> str:
        now = time.monotonic()
        t0.append(now)
        n = len(t0) - 1
        rate = (now - t0[0]) / n if n >= 20 else guess
        return f"{math.ceil((count - n) * rate * 1.3 + margin)}s"

    return duration


# ---- the floor: the bot's Vault calls, made directly -----------------------------------------


@dataclass(frozen=True)
class DirectGrant:
    accessor: str
    lease_id: str
    expires_at: float  # epoch seconds, counted as the bot counts (from before token create)


class DirectVault:
    """The bot's own sequence with hvac and the bot's token: child token (TTL = the grant),
    database credentials read with it, lease renewed to the grant, payload wrapped; ending:
    sys/leases/revoke then auth/token/revoke-accessor. One client per thread."""

    def __init__(self, addr: str, token: str):
        self.addr, self.token = addr, token
        self._local = threading.local()

    def client(self) -> hvac.Client:
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = hvac.Client(url=self.addr, token=self.token, timeout=30)
        return c

    def issue(self, ttl: int, *, wrap: bool = True) -> DirectGrant:
        started = time.time()
        auth = self.client().auth.token.create(
            ttl=f"{ttl}s", explicit_max_ttl=f"{ttl}s", renewable=False
        )["auth"]
        child = hvac.Client(url=self.addr, token=auth["client_token"], timeout=30)
        try:
            creds = child.secrets.database.generate_credentials(name=DB_ROLE)
            left = max(1, int(started + ttl - time.time()))
            child.sys.renew_lease(creds["lease_id"], increment=left)
            if wrap:
                payload = {k: creds["data"][k] for k in ("username", "password")}
                child.sys.wrap(payload=payload, ttl=min(600, left))
        finally:
            child.adapter.close()
        return DirectGrant(auth["accessor"], creds["lease_id"], started + ttl)

    def revoke(self, grant: DirectGrant) -> None:
        c = self.client()
        c.sys.revoke_lease(grant.lease_id)
        c.auth.token.revoke_accessor(grant.accessor)


# ---- the stack ----------------------------------------------------------------------------


class Sandbox:
    """Real OpenBao and PostgreSQL, the Slack fake, and `breakglass serve` processes, each with
    a database of its own (PostgreSQL as in production; SQLite with `sqlite=True`)."""

    def __init__(self, *, sqlite: bool = False):
        self.sqlite = sqlite
        self.tmp = tempfile.TemporaryDirectory(prefix="bg-bench-")
        self.backends = Backends.start()
        self.slack = FakeSlack().start()
        self._served: list[ServeProcess] = []
        self._dbs: list[BotDb] = []

    def serve(
        self, name: str, *, vault_addr: str | None = None, timeout: float = 60
    ) -> tuple[ServeProcess, BotDb]:
        """A started `breakglass serve` on a fresh database, and that database, read only."""
        workdir = Path(self.tmp.name) / name
        workdir.mkdir()
        url = (
            f"sqlite:///{workdir / 'bot.db'}"
            if self.sqlite
            else self.backends.pg.create_database(f"bench_{name}")
        )
        served = ServeProcess(
            self.backends, self.slack, workdir, database_url=url, vault_addr=vault_addr
        )
        self._served.append(served)
        served.start(timeout)
        db = BotDb(url)
        self._dbs.append(db)
        return served, db

    def direct_vault(self) -> DirectVault:
        return DirectVault(self.backends.bao.addr, self.backends.bot_token)

    def stop(self) -> None:
        for served in self._served:
            served.stop()
        for db in self._dbs:
            db.close()
        self.slack.stop()
        self.backends.stop()
        self.tmp.cleanup()
