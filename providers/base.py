"""The provider protocol: issue a credential for a grant, revoke it, check health."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel


class ProviderError(Exception):
    """A backend failed; the message is safe to show (it never holds a secret)."""


class WrapTokenInvalid(ProviderError):
    """The wrapping token was already used, has expired or never existed."""


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

    There is no per-provider revoke: every provider issues through a per-grant child token,
    and `VaultBackend.revoke(token_accessor, lease_id)` ends what any of them issued.
    """

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def issue(self, spec: GrantSpec) -> IssuedCredential: ...

    def check(self) -> None: ...
