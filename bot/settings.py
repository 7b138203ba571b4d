"""Settings from the environment (the contract in DESIGN.md); secrets stay SecretStr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str | None = None
    vault_addr: str | None = None
    vault_token: SecretStr | None = None
    # An orphan token role for the per-grant child tokens: grants then outlive the bot's own
    # token (AppRole and Kubernetes logins replace it before its max TTL).
    vault_token_role: str | None = None
    database_url: str = "sqlite:///breakglass.db"
    breakglass_config: Path = Path("breakglass.yml")
    # Where `serve` writes its pid (the gunicorn master's) and `breakglass reload` reads it.
    breakglass_pid_file: Path | None = None
    # Ed25519 key that signs the audit chain's anchors: PKCS#8 PEM, a file holding it, or
    # base64 of the 32-byte seed (`breakglass audit keygen` makes one).
    audit_signing_key: SecretStr | None = None

    @field_validator("breakglass_pid_file", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    def audit_signer(self) -> Any:
        """The anchors' signing key, or None; KeyProblem when it is set but unusable."""
        if not self.audit_signing_key or not self.audit_signing_key.get_secret_value():
            return None
        from bot.domain.anchors import load_private

        return load_private(self.audit_signing_key.get_secret_value())

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    def slack_base_url(self) -> str | None:
        if not self.slack_api_url:
            return None
        return self.slack_api_url.rstrip("/") + "/"

    def problems(self, *, serving: bool = True) -> list[str]:
        """What is missing in the environment for `breakglass serve`."""
        out = []
        if serving:
            token = self.slack_bot_token.get_secret_value() if self.slack_bot_token else ""
            if not token:
                out.append("SLACK_BOT_TOKEN is not set (the bot token, xoxb-…)")
            elif not token.startswith("xoxb-"):
                out.append("SLACK_BOT_TOKEN does not look like a bot token (xoxb-…)")
            if self.slack_app_token:
                if not self.slack_app_token.get_secret_value().startswith("xapp-"):
                    out.append("SLACK_APP_TOKEN does not look like an app-level token (xapp-…)")
            elif not self.slack_signing_secret:
                out.append(
                    "SLACK_SIGNING_SECRET is not set (needed in HTTP mode; "
                    "or set SLACK_APP_TOKEN for Socket Mode)"
                )
            if not self.vault_addr:
                out.append("VAULT_ADDR is not set")
            from providers.auth import credentials_problems

            token = self.vault_token.get_secret_value() if self.vault_token else None
            out.extend(credentials_problems(token))
        if self.slack_api_url and not self.slack_api_url.startswith(("http://", "https://")):
            out.append(f"SLACK_API_URL {self.slack_api_url!r} is not an http(s) URL")
        if self.vault_addr and not self.vault_addr.startswith(("http://", "https://")):
            out.append(f"VAULT_ADDR {self.vault_addr!r} is not an http(s) URL")
        from bot.diagnose import database_url_problem

        if (problem := database_url_problem(self.database_url)) is not None:
            out.append(problem)
        from bot.domain.anchors import KeyProblem

        try:
            self.audit_signer()
        except KeyProblem as exc:
            out.append(
                f"AUDIT_SIGNING_KEY: {exc}; make one with `breakglass audit keygen` "
                "(PKCS#8 PEM, a file holding it, or base64 of the 32-byte seed)"
            )
        return out
