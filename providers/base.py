"""The provider protocol and what crosses it: grant specs, child tokens, issued credentials,
and the errors a backend may raise (translated at the provider's edge, never from text)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    from providers.vault import VaultBackend


class ProviderError(Exception):
    """A backend failed; the message is safe to show (it never holds a secret).

    `status` is the HTTP status Vault answered with, when it answered at all. `retryable`
    says whether the same call may work later without anyone changing anything.
    """

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class VaultUnavailable(ProviderError):
    """Vault cannot serve now: unreachable, connection refused or cut, timeout, sealed (503),
    rate limited (429), a 5xx, or an answer that is not Vault's (a proxy's error page)."""

    retryable: ClassVar[bool] = True


class VaultForbidden(ProviderError):
    """Vault refused the bot's token (403): a policy lacks a capability, or the token is no
    longer valid. Retrying does not help until someone changes the policy or the token."""


class VaultRejected(ProviderError):
    """Vault understood and said no: a bad or unknown request (400), a missing path (404), or
    any other status hvac does not name."""


class WrapTokenInvalid(VaultRejected):
    """The wrapping token was already used, has expired or never existed (400 on unwrap)."""


@dataclass(frozen=True)
class GrantSpec:
    """What the provider needs to know about one grant."""

    request_id: int
    resource: str
    requester: str
    duration: timedelta
    wrap_ttl: timedelta
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChildToken:
    """The per-grant child token, created before any credential is read with it.

    Store `accessor` first: revoking it ends everything the grant produced. `token` is the
    secret itself; it is never stored, logged or shown in a repr.
    """

    accessor: str
    lifetime: int  # seconds from issued_at until Vault ends the token (the grant, or less)
    issued_at: datetime  # taken just before Vault created it, so never later than Vault's
    token: str = field(repr=False)

    @property
    def expires_at(self) -> datetime:
        return self.issued_at + timedelta(seconds=self.lifetime)


@dataclass(frozen=True)
class IssuedCredential:
    """An issued credential. Only `wrapping_token` is sensitive, and it is never stored."""

    identity: str  # non-secret name of the credential, e.g. the generated DB username
    token_accessor: str  # accessor of the per-grant child token: revokes everything
    lease_id: str | None
    issued_at: datetime
    expires_at: datetime  # when Vault ends it: the grant, or less if Vault capped the TTL
    wrap_accessor: str
    wrap_expires_at: datetime
    wrapping_token: str = field(repr=False)


class Provider(Protocol):
    """One credential backend, chosen by name in the policy file.

    Issuing is two steps so that the caller can record the child token's accessor before any
    credential exists: `begin(spec)` creates the per-grant child token, `issue(spec, child)`
    reads the credential with it and wraps it (revoking the child if that fails).
    `issue(spec)` alone does both.

    There is no per-provider revoke: every provider issues through a per-grant child token,
    and `VaultBackend.revoke(token_accessor, lease_id)` ends what any of them issued.
    """

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def __init__(self, backend: VaultBackend, options: dict[str, Any]) -> None: ...

    def begin(self, spec: GrantSpec) -> ChildToken: ...

    def issue(self, spec: GrantSpec, child: ChildToken | None = None) -> IssuedCredential: ...

    def check(self) -> None: ...
