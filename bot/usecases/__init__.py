"""The use cases, per subject, behind ports: requests, grants, reviews, deadlines, stats."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.policy import Policy, PolicyHolder
from bot.store import Store
from bot.usecases.core import SYSTEM, Core, NotFound
from bot.usecases.deadlines import Deadlines
from bot.usecases.digest import Digests
from bot.usecases.effects import Effects, OutboxWorker
from bot.usecases.grants import Grants
from bot.usecases.ports import Card, Clock, Courier, NoTimers, Timers, utcnow
from bot.usecases.requests import Requests
from bot.usecases.reviews import Reviews
from bot.usecases.stats import Stats
from bot.usecases.trail import AuditTrail
from providers import VaultBackend
from providers.transit import Sealer

__all__ = ["SYSTEM", "Breakglass", "Card", "Core", "Courier", "NotFound", "Timers"]


class Breakglass:
    """Every use case of one bot, wired to the same ports."""

    def __init__(
        self,
        store: Store,
        policy: Policy,
        backend: VaultBackend,
        courier: Courier | None = None,
        *,
        timers: Timers | None = None,
        clock: Clock = utcnow,
        signer: Ed25519PrivateKey | None = None,
    ):
        self.core = Core(
            store,
            PolicyHolder(policy),
            backend,
            Effects(),
            timers or NoTimers(),
            clock,
            Sealer(backend.client if backend is not None else None, policy.audit.encrypt),
        )
        self.trail = AuditTrail(self.core, signer)
        self.reviews = Reviews(self.core)
        self.grants = Grants(self.core, courier, self.reviews)
        self.requests = Requests(self.core, self.grants)
        self.deadlines = Deadlines(self.core, self.requests, self.grants, self.reviews)
        self.stats = Stats(store, clock, self.core.policies)
        self.digests = Digests(self.core, self.stats, self.trail)
        self.outbox: OutboxWorker | None = None

    def attach_outbox(self, worker: OutboxWorker) -> None:
        """Effects owed from now on wake `worker` once their transaction commits."""
        self.outbox = worker
        self.core.effects.wake = worker.wake
        worker.handlers.setdefault("redeliver", self.grants.redeliver)
        worker.yield_to = lambda: self.deadlines.busy

    @property
    def policy(self) -> Policy:
        return self.core.policy

    @property
    def store(self) -> Store:
        return self.core.store

    @property
    def backend(self) -> VaultBackend:
        return self.core.backend

    def card(self, request_id: int) -> Card:
        return self.core.card(request_id)
