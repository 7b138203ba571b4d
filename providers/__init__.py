"""Credential providers, one module per backend, chosen by name in the policy file.

Nothing here imports from `bot`: the providers are the edge, the bot depends on them.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from providers.auth import AuthStatus, VaultAuth, vault_auth_from_env
from providers.base import (
    ChildToken,
    GrantSpec,
    IssuedCredential,
    Provider,
    ProviderError,
    VaultForbidden,
    VaultRejected,
    VaultUnavailable,
    WrapTokenInvalid,
)
from providers.vault import VaultBackend
from providers.vault_database import VaultDatabaseProvider

PROVIDERS: dict[str, type[Provider]] = {
    VaultDatabaseProvider.name: VaultDatabaseProvider,
}

__all__ = [
    "PROVIDERS",
    "AuthStatus",
    "ChildToken",
    "GrantSpec",
    "IssuedCredential",
    "Provider",
    "ProviderError",
    "VaultAuth",
    "VaultBackend",
    "VaultForbidden",
    "VaultRejected",
    "VaultUnavailable",
    "WrapTokenInvalid",
    "make_provider",
    "options_problems",
    "vault_auth_from_env",
]


def options_problems(provider: str, options: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """Problems with a resource's `options` for `provider`, as (key path, message)."""
    try:
        PROVIDERS[provider].Options.model_validate(options)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
            out.append((tuple(err["loc"]), msg))
        return out
    return []


def make_provider(name: str, backend: VaultBackend, options: dict[str, Any]) -> Provider:
    return PROVIDERS[name](backend, options)
