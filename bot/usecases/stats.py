"""Break-glass metrics, per resource and overall, over a period: computed by the database with
aggregates (SQLAlchemy Core, the same on SQLite and PostgreSQL), never by loading every row.

Definitions (the README repeats them; `breakglass stats --json` is their contract):

- period: [start, end), start included, end excluded, in UTC.
- event: a grant made, that is a Grant row issued in the period whose request reached active
  (its state is active, ending, expired or revoked). A grant row whose issue then failed is no
  event: no one got access.
- requests: the requests created in the period. Each has one outcome: `approved` (approved by
  people and reached active), `emergency` (reached active without approval), `denied`,
  `timed_out`, `cancelled`, `failed` (approved, but the credential could not be issued) or
  `open` (pending, or approved and being issued). `emergency` is also a figure of its own.
- mean_time_between_events_seconds: (last event - first event) / (events - 1); null below 2.
- outside_window_share: events made outside every maintenance window that applied, divided by
  events to which some window applied (outside_window not null); null when none applied.
- unique_users: distinct requesters among the events.
- median_time_to_approve_seconds: median of decided_at - created_at over the requests created
  in the period that people approved (not emergency; approved, active, ending, expired,
  revoked or failed); null when none.
- median_session_seconds: median of (ended_at, or now while not yet ended) - issued_at over
  the events; null when none.
- reviews_open, reviews_overdue: the review backlog now, whatever the period (a backlog that
  a short period hid would be missed): reviews not closed (reviewed_at null), and those of
  them past due_at. Per resource: the reviewed request's resource.
- review_outcomes: reviews closed in the period (reviewed_at in it), by outcome.

Medians are taken in Python over one fetched column of seconds (the database computes the
differences); every count, minimum and maximum is an SQL aggregate.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.sql.elements import ColumnElement

from bot.domain.periods import Period
from bot.domain.workflow import Refused, State
from bot.policy import Policy, PolicyHolder
from bot.store import AccessRequest, Grant, Review, Store, UTCDateTime
from bot.usecases.ports import Clock, utcnow

# Process-local counts of failures the bot caught (each replica counts its own); served on
# /metrics next to the figures computed from the database.
VAULT_ERRORS = Counter(
    "breakglass_vault_errors",
    "Vault calls that failed where the bot caught them, by operation (issue, revoke)",
    ["operation"],
    registry=None,
)
SLACK_ERRORS = Counter(
    "breakglass_slack_errors",
    "Attempts of Slack effects (outbox) that failed, by effect; retried or given up",
    ["effect"],
    registry=None,
)
for _op in ("issue", "revoke"):
    VAULT_ERRORS.labels(_op)
for _effect in ("card", "thread", "dm", "alert", "credential", "redeliver"):
    SLACK_ERRORS.labels(_effect)

# The request reached active: someone got access.
REACHED_ACTIVE = (State.ACTIVE, State.ENDING, State.EXPIRED, State.REVOKED)
# People approved it (whatever came after).
APPROVED_BY_PEOPLE = (State.APPROVED, *REACHED_ACTIVE, State.FAILED)
OUTCOMES = ("approved", "emergency", "denied", "timed_out", "cancelled", "failed", "open")
# Outcomes that never change once reached: the only ones a Prometheus counter may count.
SETTLED = OUTCOMES[:-1]
REVIEW_OUTCOMES = ("legitimate", "needs_follow_up", "misuse")

NOT_FOR_YOU = (
    "break-glass statistics are for the approvers and reviewers named in the policy; ask the "
    "security team"
)

_R, _G, _V = AccessRequest.__table__, Grant.__table__, Review.__table__  # type: ignore[attr-defined]


@dataclass
class Metrics:
    """The figures of one resource, or of all of them."""

    events: int = 0
    requests: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    mean_time_between_events_seconds: float | None = None
    outside_window_share: float | None = None
    unique_users: int = 0
    median_time_to_approve_seconds: float | None = None
    median_session_seconds: float | None = None
    reviews_open: int = 0
    reviews_overdue: int = 0
    review_outcomes: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(REVIEW_OUTCOMES, 0)
    )

    @property
    def emergency(self) -> int:
        return self.outcomes["emergency"]

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "requests": self.requests,
            "emergency": self.emergency,
            "outcomes": dict(self.outcomes),
            "mean_time_between_events_seconds": self.mean_time_between_events_seconds,
            "outside_window_share": self.outside_window_share,
            "unique_users": self.unique_users,
            "median_time_to_approve_seconds": self.median_time_to_approve_seconds,
            "median_session_seconds": self.median_session_seconds,
            "reviews_open": self.reviews_open,
            "reviews_overdue": self.reviews_overdue,
            "review_outcomes": dict(self.review_outcomes),
        }


@dataclass
class Report:
    period: Period
    overall: Metrics
    resources: dict[str, Metrics]

    def to_json(self) -> dict[str, Any]:
        """The `breakglass stats --json` contract."""
        return {
            "period": {"start": self.period.start.isoformat(), "end": self.period.end.isoformat()},
            "overall": self.overall.to_json(),
            "resources": {name: m.to_json() for name, m in sorted(self.resources.items())},
        }


def seconds_between(later: Any, earlier: Any, dialect: str) -> ColumnElement[float]:
    """later - earlier in seconds, computed by the database. SQLite keeps UTC timestamps as
    text, which julianday() reads as a fraction of days (exact to about 50 µs): rounded to the
    millisecond, so 120 s is 120.0 and not 120.00001 (one bucket too far in a histogram).
    PostgreSQL subtracts timestamptz exactly."""
    if dialect == "sqlite":
        days = sa.func.julianday(later) - sa.func.julianday(earlier)
        return sa.func.round(days * 86400.0, 3)
    return sa.func.extract("epoch", later - earlier)


def _outcome() -> ColumnElement[str]:
    """A request's outcome, as defined in this module's docstring."""
    reached = _R.c.state.in_([str(s) for s in REACHED_ACTIVE])
    return sa.case(
        (reached & (_R.c.emergency == sa.true()), "emergency"),
        (reached, "approved"),
        *[((_R.c.state == str(s)), str(s)) for s in ("denied", "timed_out", "cancelled", "failed")],
        else_="open",
    )


def _in(column: Any, start: datetime | None, end: datetime | None) -> list[ColumnElement[bool]]:
    out = []
    if start is not None:
        out.append(column >= start)
    if end is not None:
        out.append(column < end)
    return out


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


class Stats:
    """The figures, read from the database. `policy` (when given) says who may see them in
    Slack: the people who decide on or review break-glass access."""

    def __init__(
        self,
        store: Store,
        clock: Clock = utcnow,
        policy: Policy | PolicyHolder | None = None,
    ):
        self.store = store
        self.clock = clock
        self._policies = PolicyHolder(policy) if isinstance(policy, Policy) else policy

    @property
    def policy(self) -> Policy | None:
        """The policy in force (a reload may replace it), if any."""
        return self._policies.current if self._policies is not None else None

    @property
    def dialect(self) -> str:
        return self.store.engine.dialect.name

    def _date(self, value: datetime) -> Any:
        """A moment as a bound value of the store's timestamp type (SQLite compares text)."""
        return sa.literal(value, UTCDateTime())

    # ---- the report -----------------------------------------------------------------------

    def report(self, period: Period, resource: str | None = None) -> Report:
        """Every figure over `period`, per resource and overall (one resource: `resource`)."""
        now = self.clock()
        per: dict[str, Metrics] = defaultdict(Metrics)
        overall = Metrics()
        if resource is not None:
            per[resource] = Metrics()
        with self.store.engine.connect() as c:
            self._requests(c, period, resource, per, overall)
            self._events(c, period, resource, per, overall)
            self._approve_times(c, period, resource, per, overall)
            self._sessions(c, period, resource, now, per, overall)
            self._reviews(c, period, resource, now, per, overall)
        return Report(period, overall, dict(per))

    def may_see(self, user: str) -> bool:
        """Only the people who decide on or review break-glass access see how it is used
        (who needed what, how often): the approvers and reviewers of some resource."""
        policy = self.policy
        return policy is not None and any(
            user in policy.approver_ids(name) or user in policy.reviewer_ids(name)
            for name in policy.resources
        )

    def seen_by(self, user: str, period: Period) -> Report:
        """The report for `user` in Slack, if they may see it."""
        if not self.may_see(user):
            raise Refused(NOT_FOR_YOU)
        return self.report(period)

    def _where(self, period: Period | None, resource: str | None, column: Any) -> list[Any]:
        conds = _in(column, period.start, period.end) if period else []
        if resource is not None:
            conds.append(_R.c.resource == resource)
        return conds

    def _requests(
        self, c: sa.Connection, period: Period, resource: str | None, per: dict, overall: Metrics
    ) -> None:
        for name, outcome, n in self.outcome_counts(c, period, resource):
            per[name].outcomes[outcome] += n
            per[name].requests += n
            overall.outcomes[outcome] += n
            overall.requests += n

    def outcome_counts(
        self, c: sa.Connection, period: Period | None, resource: str | None = None
    ) -> list[tuple[str, str, int]]:
        """(resource, outcome, requests) of the requests created in `period` (all: None)."""
        outcome = _outcome().label("outcome")
        q = (
            sa.select(_R.c.resource, outcome, sa.func.count().label("n"))
            .where(*self._where(period, resource, _R.c.created_at))
            .group_by(_R.c.resource, outcome)
        )
        return [(r.resource, r.outcome, int(r.n)) for r in c.execute(q)]

    def _events_from(self) -> Any:
        return _G.join(_R, _G.c.request_id == _R.c.id)

    def _event_conds(self, period: Period, resource: str | None) -> list[Any]:
        return [
            _R.c.state.in_([str(s) for s in REACHED_ACTIVE]),
            *self._where(period, resource, _G.c.issued_at),
        ]

    def _events(
        self, c: sa.Connection, period: Period, resource: str | None, per: dict, overall: Metrics
    ) -> None:
        first, last = sa.func.min(_G.c.issued_at), sa.func.max(_G.c.issued_at)
        outside = sa.func.sum(sa.case((_R.c.outside_window == sa.true(), 1), else_=0))
        columns = [
            sa.func.count().label("events"),
            seconds_between(last, first, self.dialect).label("span"),
            outside.label("outside"),
            sa.func.count(_R.c.outside_window).label("windowed"),
            sa.func.count(sa.distinct(_R.c.requester)).label("users"),
        ]
        base = sa.select(*columns).select_from(self._events_from())
        base = base.where(*self._event_conds(period, resource))
        grouped = base.add_columns(_R.c.resource).group_by(_R.c.resource)
        for row in c.execute(grouped):
            _fill_events(per[row.resource], row)
        # Overall again in SQL: distinct users across resources do not add up.
        _fill_events(overall, c.execute(base).one())

    def _approve_times(
        self, c: sa.Connection, period: Period, resource: str | None, per: dict, overall: Metrics
    ) -> None:
        values = self.approve_seconds(c, period, resource)
        _medians(values, per, overall, "median_time_to_approve_seconds")

    def approve_seconds(
        self, c: sa.Connection, period: Period | None, resource: str | None = None
    ) -> list[tuple[str, float]]:
        """(resource, decided_at - created_at) of the requests people approved."""
        q = sa.select(
            _R.c.resource, seconds_between(_R.c.decided_at, _R.c.created_at, self.dialect)
        ).where(
            _R.c.emergency == sa.false(),
            _R.c.decided_at.is_not(None),
            _R.c.state.in_([str(s) for s in APPROVED_BY_PEOPLE]),
            *self._where(period, resource, _R.c.created_at),
        )
        return [(r[0], float(r[1])) for r in c.execute(q)]

    def _sessions(
        self,
        c: sa.Connection,
        period: Period,
        resource: str | None,
        now: datetime,
        per: dict,
        overall: Metrics,
    ) -> None:
        ended = sa.func.coalesce(_G.c.ended_at, self._date(now))
        q = (
            sa.select(_R.c.resource, seconds_between(ended, _G.c.issued_at, self.dialect))
            .select_from(self._events_from())
            .where(*self._event_conds(period, resource))
        )
        values = [(r[0], float(r[1])) for r in c.execute(q)]
        _medians(values, per, overall, "median_session_seconds")

    def _reviews(
        self,
        c: sa.Connection,
        period: Period,
        resource: str | None,
        now: datetime,
        per: dict,
        overall: Metrics,
    ) -> None:
        for name, open_, overdue in self.review_backlog(c, now, resource):
            per[name].reviews_open, per[name].reviews_overdue = open_, overdue
            overall.reviews_open += open_
            overall.reviews_overdue += overdue
        q = (
            sa.select(_R.c.resource, _V.c.outcome, sa.func.count())
            .select_from(_V.join(_R, _V.c.request_id == _R.c.id))
            .where(*self._where(period, resource, _V.c.reviewed_at))
            .group_by(_R.c.resource, _V.c.outcome)
        )
        for name, outcome, n in c.execute(q):
            key = outcome or "unknown"
            for m in (per[name], overall):
                m.review_outcomes[key] = m.review_outcomes.get(key, 0) + int(n)

    def review_backlog(
        self, c: sa.Connection, now: datetime, resource: str | None = None
    ) -> list[tuple[str, int, int]]:
        """(resource, reviews open, of which overdue) now, whatever the period."""
        overdue = sa.func.sum(sa.case((_V.c.due_at < self._date(now), 1), else_=0))
        q = (
            sa.select(_R.c.resource, sa.func.count(), overdue)
            .select_from(_V.join(_R, _V.c.request_id == _R.c.id))
            .where(_V.c.reviewed_at.is_(None), *self._where(None, resource, None))
            .group_by(_R.c.resource)
        )
        return [(r[0], int(r[1]), int(r[2] or 0)) for r in c.execute(q)]

    # ---- what /metrics serves besides --------------------------------------------------------

    def active_grants(self, c: sa.Connection) -> list[tuple[str, int]]:
        """(resource, grants live now): active, or ending (the revocation not yet confirmed)."""
        q = (
            sa.select(_R.c.resource, sa.func.count())
            .select_from(self._events_from())
            .where(_R.c.state.in_([str(State.ACTIVE), str(State.ENDING)]))
            .group_by(_R.c.resource)
        )
        return [(r[0], int(r[1])) for r in c.execute(q)]

    def histogram(
        self, c: sa.Connection, what: str, bounds: Sequence[float]
    ) -> tuple[list[int], float, int]:
        """(cumulative counts at each bound, sum, count) of `what` over all time: "approve"
        (decided_at - created_at of requests people approved) or "lateness" (ended_at -
        expires_at of grants that expired). The database computes each value once; they are
        counted into buckets here (a CASE per bucket would compute each value per bucket)."""
        if what == "approve":
            values = [v for _, v in self.approve_seconds(c, None)]
        else:
            late = seconds_between(_G.c.ended_at, _G.c.expires_at, self.dialect)
            q = sa.select(late).where(_G.c.end_reason == "expired", _G.c.ended_at.is_not(None))
            values = [float(v) for (v,) in c.execute(q)]
        values.sort()
        below = [bisect.bisect_right(values, b) for b in bounds]
        return below, math.fsum(values), len(values)


def _fill_events(m: Metrics, row: Any) -> None:
    m.events = int(row.events)
    m.unique_users = int(row.users)
    if m.events >= 2 and row.span is not None:
        m.mean_time_between_events_seconds = round(float(row.span) / (m.events - 1), 3)
    windowed = int(row.windowed or 0)
    if windowed:
        m.outside_window_share = round(int(row.outside or 0) / windowed, 6)


def _medians(
    values: Iterable[tuple[str, float]], per: dict[str, Metrics], overall: Metrics, attr: str
) -> None:
    by: dict[str, list[float]] = defaultdict(list)
    every: list[float] = []
    for name, v in values:
        by[name].append(v)
        every.append(v)
    for name, vs in by.items():
        setattr(per[name], attr, _median(vs))
    setattr(overall, attr, _median(every))
