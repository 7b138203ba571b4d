"""Prometheus metrics for GET /metrics: figures computed from the database at scrape time (so
every replica answers the same), next to this process's own counts of Vault and Slack errors.

Served from a registry of their own, not prometheus_client's global one: nothing else a
library registers there (process or platform collectors) is exposed by accident.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bot.usecases.stats import SETTLED, SLACK_ERRORS, VAULT_ERRORS, Stats

# Approvals take seconds to an hour; the request times out after the policy's approval_timeout.
APPROVE_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0)
# How long after its expiry a grant was confirmed ended: the bot aims at well under a second.
LATENESS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class DatabaseCollector(Collector):
    """Computes from the database on every scrape: nothing kept in memory goes stale or
    differs between replicas."""

    def __init__(self, stats: Stats):
        self.stats = stats

    def describe(self) -> list[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        now = stats.clock()
        with stats.store.engine.connect() as c:
            requests = CounterMetricFamily(
                "breakglass_requests",
                "Break-glass requests by resource and settled outcome (a request still open "
                "is counted once it settles; see breakglass_requests_open)",
                labels=["resource", "outcome"],
            )
            pending = GaugeMetricFamily(
                "breakglass_requests_open",
                "Requests waiting for a decision or being issued",
                labels=["resource"],
            )
            for resource, outcome, n in stats.outcome_counts(c, None):
                if outcome in SETTLED:
                    requests.add_metric([resource, outcome], n)
                else:
                    pending.add_metric([resource], n)
            yield requests
            yield pending
            active = GaugeMetricFamily(
                "breakglass_active_grants",
                "Grants live now: active, or ending with the revocation not yet confirmed",
                labels=["resource"],
            )
            for resource, n in stats.active_grants(c):
                active.add_metric([resource], n)
            yield active
            backlog = stats.review_backlog(c, now)
            yield GaugeMetricFamily(
                "breakglass_reviews_open",
                "Post-incident reviews not closed yet",
                value=sum(open_ for _, open_, _ in backlog),
            )
            yield GaugeMetricFamily(
                "breakglass_reviews_overdue",
                "Post-incident reviews not closed past their due time",
                value=sum(overdue for _, _, overdue in backlog),
            )
            yield from _forwarding(stats, c)
            yield _histogram(
                stats,
                c,
                "approve",
                "breakglass_time_to_approve_seconds",
                "From request to approval, for requests people approved (not emergency)",
                APPROVE_BUCKETS,
            )
            yield _histogram(
                stats,
                c,
                "lateness",
                "breakglass_revocation_lateness_seconds",
                "From a grant's expiry to Vault confirming it ended, for grants that expired",
                LATENESS_BUCKETS,
            )


def _forwarding(stats: Stats, c: object) -> Iterator[Metric]:
    """Per audit sink: events written and not yet received, and whether it is failing."""
    from bot.store import cursors

    sinks = [s.name for s in stats.policy.audit.forward] if stats.policy else []
    if not sinks:
        return
    lag = GaugeMetricFamily(
        "breakglass_forward_lag_events",
        "Audit events written and not yet received by the sink",
        labels=["sink"],
    )
    failing = GaugeMetricFamily(
        "breakglass_forward_failing",
        "1 while the sink does not take the events (see /readyz for why), else 0",
        labels=["sink"],
    )
    for st in cursors.status(c, sinks):  # type: ignore[arg-type]
        lag.add_metric([st.sink], st.lag)
        failing.add_metric([st.sink], 1 if st.failing_since else 0)
    yield lag
    yield failing


def _histogram(
    stats: Stats, c: object, what: str, name: str, doc: str, bounds: tuple[float, ...]
) -> HistogramMetricFamily:
    below, total, count = stats.histogram(c, what, bounds)  # type: ignore[arg-type]
    buckets = [(str(b), n) for b, n in zip(bounds, below, strict=True)]
    buckets.append(("+Inf", count))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


def registry_for(stats: Stats) -> CollectorRegistry:
    """A registry of our own: the database figures and this process's error counters."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(stats))
    registry.register(VAULT_ERRORS)
    registry.register(SLACK_ERRORS)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format of everything in `registry`, computed now."""
    return generate_latest(registry)
