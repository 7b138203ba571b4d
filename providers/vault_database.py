"""vault-database: dynamic database users from Vault's database secrets engine.

Route: GET {mount}/creds/{role}, read with a per-grant child token.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from providers.base import GrantSpec, IssuedCredential
from providers.vault import VaultBackend, vault_errors


class VaultDatabaseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mount: str = "database"
    role: str = Field(min_length=1)
    # Policies of the per-grant child token; default: those of the bot's own token.
    policies: list[str] | None = None


class VaultDatabaseProvider:
    """A database user created for one grant and dropped when it ends."""

    name: ClassVar[str] = "vault-database"
    Options: ClassVar[type[BaseModel]] = VaultDatabaseOptions

    def __init__(self, backend: VaultBackend, options: dict):
        self.backend = backend
        self.options = VaultDatabaseOptions.model_validate(options)

    def issue(self, spec: GrantSpec) -> IssuedCredential:
        opts = self.options

        def read(child):
            with vault_errors(f"{opts.mount}/creds/{opts.role}"):
                resp = child.secrets.database.generate_credentials(
                    name=opts.role, mount_point=opts.mount
                )
                data = resp["data"]
                payload = {"username": data["username"], "password": data["password"]}
                return payload, data["username"], resp["lease_id"]

        return self.backend.issue_with_child(spec, opts.policies, read)

    def check(self) -> None:
        self.backend.check()
