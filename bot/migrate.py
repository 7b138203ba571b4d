"""Applying and checking the Alembic migrations shipped inside the package."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlmodel import SQLModel

log = logging.getLogger(__name__)


def alembic_config() -> Config:
    cfg = Config()
    # The package's own folder: works the same from a wheel and an editable install.
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent / "migrations"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision` (default the newest); one line says what it applied
    (Alembic's own lines are quietened: `bot.logs`)."""
    todo = pending(engine) if revision == "head" else None
    cfg = alembic_config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
    if todo:
        log.info(
            "database migrated: applied %s (%s migration(s))", ", ".join(sorted(todo)), len(todo)
        )


def pending(engine: Engine) -> list[str]:
    """Revisions not yet applied to this database."""
    script = ScriptDirectory.from_config(alembic_config())
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    heads = script.get_heads()
    if set(heads) == current:
        return []
    return [
        rev.revision
        for rev in script.iterate_revisions(heads, tuple(current) or "base")
        if rev.revision not in current
    ]


def schema_drift(engine: Engine) -> list:
    """Differences between the models and a migrated database (empty when they agree)."""
    with engine.connect() as connection:
        ctx = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(ctx, SQLModel.metadata)
