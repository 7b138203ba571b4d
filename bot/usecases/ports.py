"""What the use cases need from the outside world, as protocols, and the data they hand over."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bot.domain.anomalies import reasons
from bot.domain.workflow import State
from bot.policy import Resource
from bot.store import AccessRequest, AuditEvent, Grant, Review

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Card:
    """Everything a message about one request shows."""

    request: AccessRequest
    resource: Resource
    approvers: list[str]
    approvals: list[str] = field(default_factory=list)
    denied_by: str | None = None
    deny_reason: str | None = None
    grant: Grant | None = None
    # The post-incident review, once one is owed; who may close it.
    review: Review | None = None
    reviewers: list[str] = field(default_factory=list)
    # The audit event a message is about: its sequence and hash go into the thread, so Slack
    # witnesses the chain (a rewritten database no longer matches what the thread shows).
    event: AuditEvent | None = None

    @property
    def needed(self) -> int:
        return self.resource.approvals_needed(self.request.outside_window)

    @property
    def flags(self) -> list[str]:
        """The anomaly flags' reasons, as recorded when the request was filed."""
        return reasons(self.request.flags)

    @property
    def state(self) -> State:
        return State(self.request.state)

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=self.request.duration_seconds)


class Courier(Protocol):
    """Hands a wrapping token to its requester. Direct, never through the outbox: the token is
    a secret and is never stored; a failed delivery is redone with a fresh credential. What
    else people are told goes through the outbox (`bot.usecases.effects`), as data."""

    def deliver(self, card: Card, wrapping_token: str) -> tuple[str, str]: ...


class Timers(Protocol):
    """One-shot timers for deadlines; the database stays the source of truth."""

    def at(self, kind: str, key: int, when: datetime) -> None: ...

    def cancel(self, kind: str, key: int) -> None: ...


class NoTimers:
    """Timers that do nothing: the periodic sweep alone handles deadlines."""

    def at(self, kind: str, key: int, when: datetime) -> None:
        pass

    def cancel(self, kind: str, key: int) -> None:
        pass


class EventSink(Protocol):
    """Somewhere audit events are forwarded to (a SIEM's webhook, a syslog server). `send`
    returns once the receiver has them all; it raises `forwarding.SinkDown` (try again with
    backoff) or `forwarding.SinkRefused` (the receiver says our configuration is wrong)."""

    def send(self, events: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...
