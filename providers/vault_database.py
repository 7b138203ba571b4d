"""vault-database: dynamic database users from Vault's database secrets engine.

Routes: GET {mount}/creds/{role}, read with a per-grant child token; GET {mount}/roles/{role}
for `check-config --online`. API page: https://openbao.org/api-docs/secret/databases/
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import hvac
from pydantic import BaseModel, ConfigDict, Field

from providers.base import ChildToken, GrantSpec, IssuedCredential, VaultRejected
from providers.vault import VaultBackend, vault_errors


class VaultDatabaseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mount: str = "database"
    role: str = Field(min_length=1)
    # Policies of the per-grant child token; default: those of the bot's own token.
    policies: list[str] | None = None


@dataclass(frozen=True)
class DatabaseRole:
    """What `check-config` needs to know of a role (no secret: statements and TTLs)."""

    name: str
    default_ttl: int  # seconds; 0: the mount's default
    max_ttl: int  # seconds; 0: the mount's max_lease_ttl


def read_role(client: hvac.Client, mount: str, role: str) -> DatabaseRole | None:
    """The role, or None when it does not exist (404). Route: GET {mount}/roles/{role}."""
    try:
        with vault_errors(f"{mount}/roles/{role}"):
            data = client.secrets.database.read_role(name=role, mount_point=mount)["data"]
            return DatabaseRole(
                name=role,
                default_ttl=int(data.get("default_ttl") or 0),
                max_ttl=int(data.get("max_ttl") or 0),
            )
    except VaultRejected as exc:
        if exc.status == 404:
            return None
        raise


class VaultDatabaseProvider:
    """A database user created for one grant and dropped when it ends."""

    name: ClassVar[str] = "vault-database"
    Options: ClassVar[type[BaseModel]] = VaultDatabaseOptions

    def __init__(self, backend: VaultBackend, options: dict[str, Any]) -> None:
        self.backend = backend
        self.options = VaultDatabaseOptions.model_validate(options)

    def begin(self, spec: GrantSpec) -> ChildToken:
        """The grant's child token; store its accessor before calling `issue`."""
        return self.backend.begin(spec, self.options.policies)

    def issue(self, spec: GrantSpec, child: ChildToken | None = None) -> IssuedCredential:
        """Read a database user with the grant's child token (made here when not given)."""
        opts = self.options

        def read(client: hvac.Client) -> tuple[dict[str, str], str, str | None]:
            with vault_errors(f"{opts.mount}/creds/{opts.role}"):
                resp = client.secrets.database.generate_credentials(
                    name=opts.role, mount_point=opts.mount
                )
                data = resp["data"]
                payload = {"username": data["username"], "password": data["password"]}
                return payload, str(data["username"]), resp["lease_id"] or None

        return self.backend.finish(spec, child or self.begin(spec), read)

    def check(self) -> None:
        self.backend.check()
