"""What an operator got wrong with the database, in one line each with its fix: DATABASE_URL
itself, then the database behind it (down, a refused password, not migrated). No line carries
a password or a driver's own message (either may hold one): the URL is shown masked."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # SQLAlchemy is imported when a database is used: `--help` stays quick
    import sqlalchemy as sa
    from sqlalchemy.engine import URL

URL_FORMS = "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE"
MIGRATE = "run `breakglass migrate` (or `breakglass serve`, which migrates at start)"


class Misconfigured(Exception):
    """A mistake in the configuration or around it, as the lines a person reads (no secret,
    no traceback); `code` is the exit status the command ends with."""

    def __init__(self, *lines: str, code: int = 1):
        super().__init__("\n".join(lines))
        self.lines = list(lines)
        self.code = code


def shown(url: str | URL) -> str:
    """The URL as it may be printed: its password masked, the rest as a person wrote it
    (a socket folder in `?host=` unescaped)."""
    from urllib.parse import unquote

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError):
        return "(unparseable)"
    return unquote(parsed.render_as_string(hide_password=True))


def database_url_problem(url: str) -> str | None:
    """What is wrong with DATABASE_URL itself, found without connecting; None if nothing."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return f"DATABASE_URL is not a database URL: write {URL_FORMS}"
    backend = parsed.get_backend_name()
    if backend == "postgres":
        return (
            f"DATABASE_URL {shown(parsed)} uses the postgres:// scheme, which SQLAlchemy "
            "refuses: write postgresql+psycopg:// instead (the rest stays as it is)"
        )
    if backend not in ("sqlite", "postgresql"):
        return (
            f"DATABASE_URL {shown(parsed)}: breakglass keeps its data in SQLite or PostgreSQL; "
            f"write {URL_FORMS}"
        )
    try:
        parsed.get_dialect().import_dbapi()
    except (NoSuchModuleError, ImportError):
        return (
            f"DATABASE_URL {shown(parsed)}: its driver ({parsed.get_driver_name()}) is not "
            "installed: write postgresql+psycopg:// (psycopg 3 comes with breakglass)"
        )
    return None


def _sqlite_file(parsed: URL) -> Path | None:
    if parsed.get_backend_name() != "sqlite":
        return None
    name = parsed.database or ""
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def database_error(exc: BaseException, url: str | URL) -> str:
    """The line for a failure to use DATABASE_URL's database, told apart by the driver's
    SQLSTATE where it has one, else by libpq's and SQLite's message classes (connection
    failures carry no SQLSTATE). The driver's message itself is never shown."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url) if isinstance(url, str) else url
    where = f"database {shown(parsed)}"
    orig: Any = getattr(exc, "orig", None) or exc
    message = str(orig)
    kind = type(orig).__name__
    sqlstate = getattr(orig, "sqlstate", None)
    user = parsed.username or "(none)"
    if parsed.get_backend_name() == "sqlite":
        if "no such table" in message:
            return f"{where}: not migrated (it has no breakglass tables): {MIGRATE}"
        if "unable to open database file" in message:
            return (
                f"{where}: cannot open the file (its folder is missing or not writable): "
                "correct the path in DATABASE_URL"
            )
        if "file is not a database" in message:
            return f"{where}: the file is not a SQLite database: correct the path in DATABASE_URL"
        if "readonly database" in message:
            return f"{where}: the file is read-only for this user: make it writable"
        if "database is locked" in message:
            return f"{where}: the file is locked by another process: try again"
        return f"{where}: cannot use it ({kind})"
    if sqlstate == "42P01":  # undefined_table
        return f"{where}: not migrated (it has no breakglass tables): {MIGRATE}"
    if sqlstate == "42501":  # insufficient_privilege
        return (
            f'{where}: the user "{user}" lacks a privilege it needs: grant it ALL on the '
            "database's tables, or use the database's owner"
        )
    if sqlstate == "57P03" or "starting up" in message or "shutting down" in message:
        return f"{where}: PostgreSQL is starting or stopping: try again in a moment"
    if "password authentication failed" in message or "no password supplied" in message:
        return (
            f'{where}: PostgreSQL refused the password of user "{user}": correct the password '
            "in DATABASE_URL (special characters %-encoded)"
        )
    if "authentication failed" in message:
        return f'{where}: PostgreSQL refused to authenticate user "{user}": check DATABASE_URL'
    if "pg_hba.conf" in message:
        return (
            f'{where}: PostgreSQL does not accept user "{user}" from this host (pg_hba.conf): '
            "allow it there, or connect from an allowed host"
        )
    if re.search(r'role "[^"]*" does not exist', message):
        return f'{where}: PostgreSQL has no user "{user}": create it, or correct DATABASE_URL'
    if re.search(r'database "[^"]*" does not exist', message):
        return (
            f'{where}: PostgreSQL has no database "{parsed.database}": create it '
            "(createdb), or correct its name in DATABASE_URL"
        )
    if (
        "resolve host" in message
        or "translate host name" in message
        or "Name or service not known" in message
    ):
        return (
            f'{where}: cannot connect: the host "{parsed.host}" is not known: correct the host '
            "in DATABASE_URL"
        )
    if any(
        s in message
        for s in (
            "Connection refused",
            "No such file or directory",
            "Is the server running",
            "timeout expired",
            "No route to host",
            "Network is unreachable",
            "Connection timed out",
        )
    ):
        return (
            f"{where}: cannot connect: PostgreSQL is not running there or cannot be reached: "
            "start it, or correct the host and port in DATABASE_URL"
        )
    if "too many" in message and "connections" in message:
        return f"{where}: PostgreSQL has no connection left for the bot: try again later"
    return f"{where}: cannot use it ({kind})"


def engine_for(url: str) -> sa.Engine:
    """An engine for DATABASE_URL, or Misconfigured naming what is wrong with the URL."""
    from bot.store import create_db_engine

    problem = database_url_problem(url)
    if problem is not None:
        raise Misconfigured(problem)
    return create_db_engine(url)


def check_database(engine: sa.Engine, *, exists: bool = True, migrated: bool = True) -> list[str]:
    """Connect (and with `migrated`, check every migration is applied); raise Misconfigured
    with the reason when the database cannot be used. `exists`: a SQLite file must be there
    already (reading commands must not leave an empty file behind). Returns the migrations
    still pending (with `migrated=False`)."""
    from sqlalchemy.exc import SQLAlchemyError

    from bot import migrate

    where = f"database {shown(engine.url)}"
    path = _sqlite_file(engine.url)
    if path is not None:
        if exists and not path.exists():
            raise Misconfigured(
                f"{where}: no such file: {MIGRATE} to create it, or point DATABASE_URL at the "
                "bot's database"
            )
        if not path.parent.is_dir():
            raise Misconfigured(
                f"{where}: the folder {path.parent} does not exist: create it, or correct the "
                "path in DATABASE_URL"
            )
    try:
        todo = migrate.pending(engine)
    except SQLAlchemyError as exc:
        raise Misconfigured(database_error(exc, engine.url)) from None
    if todo and migrated:
        raise Misconfigured(f"{where}: not migrated ({len(todo)} migration(s) pending): {MIGRATE}")
    return todo


@contextlib.contextmanager
def database(url: str, *, exists: bool = True, migrated: bool = True) -> Iterator[sa.Engine]:
    """DATABASE_URL's engine, checked first (see `check_database`); a database failure
    inside the block becomes Misconfigured with its reason. Disposed of at the end."""
    from sqlalchemy.exc import SQLAlchemyError

    engine = engine_for(url)
    try:
        check_database(engine, exists=exists, migrated=migrated)
        yield engine
    except SQLAlchemyError as exc:
        raise Misconfigured(database_error(exc, engine.url)) from None
    finally:
        engine.dispose()
