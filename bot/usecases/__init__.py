"""The use cases, per subject, behind ports: requests, grants, deadlines."""

from __future__ import annotations

from bot.policy import Policy
from bot.store import Store
from bot.usecases.core import SYSTEM, Core, NotFound
from bot.usecases.deadlines import Deadlines
from bot.usecases.grants import Grants
from bot.usecases.ports import Card, Clock, Notifier, NoTimers, Timers, utcnow
from bot.usecases.requests import Requests
from providers import VaultBackend

__all__ = ["SYSTEM", "Breakglass", "Card", "Core", "NotFound", "Notifier", "Timers"]


class Breakglass:
    """Every use case of one bot, wired to the same ports."""

    def __init__(
        self,
        store: Store,
        policy: Policy,
        backend: VaultBackend,
        notifier: Notifier,
        *,
        timers: Timers | None = None,
        clock: Clock = utcnow,
    ):
        self.core = Core(store, policy, backend, notifier, timers or NoTimers(), clock)
        self.grants = Grants(self.core)
        self.requests = Requests(self.core, self.grants)
        self.deadlines = Deadlines(self.core, self.requests, self.grants)

    @property
    def policy(self) -> Policy:
        return self.core.policy

    @property
    def store(self) -> Store:
        return self.core.store

    @property
    def backend(self) -> VaultBackend:
        return self.core.backend

    @property
    def notifier(self) -> Notifier:
        return self.core.notifier

    def card(self, request_id: int) -> Card:
        return self.core.card(request_id)
