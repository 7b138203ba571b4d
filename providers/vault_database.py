"""vault-database: dynamic database users from Vault's database secrets engine, and what
they ran (pg_stat_statements, read with a short-lived monitoring user when a grant ends).

Routes: GET {mount}/creds/{role}, read with a per-grant child token; GET {mount}/roles/{role}
for `check-config --online`. API page: https://openbao.org/api-docs/secret/databases/
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import hvac
import psycopg
from psycopg import conninfo, errors
from pydantic import BaseModel, ConfigDict, Field

from providers.base import ChildToken, GrantSpec, IssuedCredential, ProviderError, VaultRejected
from providers.vault import VaultBackend, vault_errors

log = logging.getLogger(__name__)


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
    db_name: str = ""  # the connection ({mount}/config/{db_name}) its users are made on


def read_role(client: hvac.Client, mount: str, role: str) -> DatabaseRole | None:
    """The role, or None when it does not exist (404). Route: GET {mount}/roles/{role}."""
    try:
        with vault_errors(f"{mount}/roles/{role}"):
            data = client.secrets.database.read_role(name=role, mount_point=mount)["data"]
            return DatabaseRole(
                name=role,
                default_ttl=int(data.get("default_ttl") or 0),
                max_ttl=int(data.get("max_ttl") or 0),
                db_name=str(data.get("db_name") or ""),
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


# ---- what a grant's database user ran (pg_stat_statements) --------------------------------


class ActivityUnavailable(Exception):
    """The statements could not be read; the message is safe to show (never a secret)."""


@dataclass(frozen=True)
class UserStatement:
    """One pg_stat_statements row of one user: a normalized statement and its counts."""

    username: str
    database: str | None
    query: str
    calls: int
    rows: int


@dataclass(frozen=True)
class Statements:
    """What the monitoring read found: rows by user, and which users no longer exist."""

    by_user: dict[str, list[UserStatement]]
    gone: frozenset[str]  # dropped before the read, their oid unknown: rows unattributable
    monitor: str  # the monitoring user that read them (Vault's audit log shows its lease)


# The monitoring user sees every user's rows with pg_read_all_stats; without it, other
# users' query texts read "<insufficient privilege>". A user is found by the oid recorded
# while it existed (its rows outlive DROP ROLE), else by its name.
STATEMENTS_SQL = """
SELECT s.userid::bigint, r.rolname, d.datname, s.query, s.calls, s.rows
FROM pg_stat_statements s
LEFT JOIN pg_roles r ON r.oid = s.userid
LEFT JOIN pg_database d ON d.oid = s.dbid
WHERE s.userid = ANY(%s::oid[]) OR r.rolname = ANY(%s)
ORDER BY s.calls DESC
LIMIT 5000
"""
HIDDEN = "<insufficient privilege>"


@dataclass(frozen=True)
class Monitor:
    """Where and as what role the bot reads pg_stat_statements; every step gives up after
    `timeout` seconds."""

    backend: VaultBackend
    mount: str
    role: str
    dsn: str | None = None
    timeout: float = 3.0

    def run(self, read: Any) -> tuple[Any, str]:
        """`read(cursor)` with a monitoring user taken from Vault for this read only and
        revoked right after; (its result, the monitoring user's name).

        Routes (the bot's token): GET {mount}/roles/{role} and GET {mount}/config/{name}
        when `dsn` is None (where Vault itself connects; Vault never returns the
        connection's password), GET {mount}/creds/{role}, PUT sys/leases/revoke.
        Raises ActivityUnavailable with a reason fit to show.
        """
        client = self.backend.hurried(self.timeout)
        try:
            where = _where(client, self.mount, self.role, self.dsn)
            with vault_errors(f"{self.mount}/creds/{self.role}"):
                resp = client.secrets.database.generate_credentials(
                    name=self.role, mount_point=self.mount
                )
                user, password = str(resp["data"]["username"]), str(resp["data"]["password"])
                lease = resp.get("lease_id") or None
        except ProviderError as exc:
            raise ActivityUnavailable(str(exc)) from None
        try:
            with (
                psycopg.connect(
                    **where,
                    user=user,
                    password=password,
                    connect_timeout=max(2, int(self.timeout)),
                    options=f"-c statement_timeout={int(self.timeout * 1000)}",
                    application_name="breakglass-activity",
                    autocommit=True,
                ) as conn,
                conn.cursor() as cur,
            ):
                return read(cur), user
        except psycopg.Error as exc:
            raise ActivityUnavailable(_pg_reason(exc, password, self.timeout)) from None
        finally:
            if lease:
                try:
                    with vault_errors("sys/leases/revoke"):
                        client.sys.revoke_lease(lease)
                except ProviderError as exc:  # it ends at its own short TTL anyway
                    log.warning("could not revoke the monitoring lease %s: %s", lease, exc)


def user_oids(monitor: Monitor, usernames: list[str]) -> dict[str, int]:
    """The oid of each of these database users that exists now: recorded at issue, it finds
    the user's statements even once Vault dropped it."""

    def read(cur: Any) -> dict[str, int]:
        cur.execute(
            "SELECT rolname, oid::bigint FROM pg_roles WHERE rolname = ANY(%s)", (usernames,)
        )
        return {str(name): int(oid) for name, oid in cur.fetchall()}

    return monitor.run(read)[0]


def read_statements(monitor: Monitor, users: dict[str, int | None]) -> Statements:
    """What these database users (name: oid if known) ran, from pg_stat_statements."""
    names = list(users)
    oids = [oid for oid in users.values() if oid is not None]

    def read(cur: Any) -> tuple[set[str], list[tuple[Any, ...]]]:
        cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (names,))
        present = {row[0] for row in cur.fetchall()}
        cur.execute(STATEMENTS_SQL, (oids, names))
        return present, cur.fetchall()

    (present, rows), monitor_user = monitor.run(read)
    if any(row[3] == HIDDEN for row in rows):
        raise ActivityUnavailable(
            f"the monitoring role {monitor.role} cannot read other users' statements "
            "(its creation statements must GRANT pg_read_all_stats)"
        )
    by_oid = {oid: name for name, oid in users.items() if oid is not None}
    by_user: dict[str, list[UserStatement]] = {}
    for userid, rolname, datname, query, calls, nrows in rows:
        name = by_oid.get(int(userid)) or rolname
        if name not in users:
            continue  # a name now held by another role than the oid we knew
        by_user.setdefault(name, []).append(
            UserStatement(name, datname, str(query or ""), int(calls), int(nrows))
        )
    gone = {name for name, oid in users.items() if oid is None and name not in present}
    return Statements(by_user, frozenset(gone), monitor_user)


def _where(client: hvac.Client, mount: str, monitor_role: str, dsn: str | None) -> dict[str, Any]:
    """Connection keywords without user and password: from `dsn`, else from the connection
    Vault uses for the monitoring role (its connection_url template)."""
    if dsn is None:
        role = read_role(client, mount, monitor_role)
        if role is None:
            raise ActivityUnavailable(
                f"the monitoring role {mount}/roles/{monitor_role} does not exist in Vault"
            )
        name = role.db_name
        with vault_errors(f"{mount}/config/{name}"):
            config = client.secrets.database.read_connection(name, mount_point=mount)["data"]
            template = str(config["connection_details"]["connection_url"])
            plugin = str(config.get("plugin_name") or "")
        if "postgres" not in plugin:
            raise ActivityUnavailable(f"{mount}/config/{name} is not a PostgreSQL connection")
        # Vault fills {{username}} and {{password}} in; we give ours as keywords instead.
        dsn = template.replace("{{username}}", "u").replace("{{password}}", "p")
    try:
        keys = conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise ActivityUnavailable(
            f"cannot read the connection string ({type(exc).__name__})"
        ) from None
    for secret in ("user", "password", "passfile"):
        keys.pop(secret, None)
    return keys


def _pg_reason(exc: Exception, password: str, timeout: float) -> str:
    """A psycopg error as a reason to show: PostgreSQL's own message (it never holds the
    password; scrubbed anyway), with what to do for the usual set-up mistakes."""
    if isinstance(exc, errors.QueryCanceled):
        return f"the database did not answer within {timeout:g} s"
    if isinstance(exc, errors.UndefinedTable):
        return "pg_stat_statements is not installed there (CREATE EXTENSION pg_stat_statements)"
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    text = text.replace(password, "***")[:300]
    if isinstance(exc, psycopg.OperationalError) and not getattr(exc, "sqlstate", None):
        return f"cannot connect to the database: {text}"
    return text
