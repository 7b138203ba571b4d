"""SQLModel tables and the database engine; the schema itself comes from Alembic migrations."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import Field, Session, SQLModel

# Set before the first model so every constraint gets a stable name in migrations.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator):
    """Timezone-aware UTC in, timezone-aware UTC out, also on SQLite (which keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(nullable: bool = True) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable)


# A request is open while it may still lead to, or is, live access. One per person and
# resource, enforced by the database (a partial unique index), not by a read-then-write.
OPEN_STATES = ("pending", "approved", "active", "ending")


class AccessRequest(SQLModel, table=True):
    __tablename__ = "access_request"
    __table_args__ = (
        sa.Index(
            "uq_access_request_open",
            "requester",
            "resource",
            unique=True,
            postgresql_where=sa.text("state IN ('pending', 'approved', 'active', 'ending')"),
            sqlite_where=sa.text("state IN ('pending', 'approved', 'active', 'ending')"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    requester: str = Field(max_length=32, index=True)
    resource: str = Field(max_length=128, index=True)
    duration_seconds: int
    justification: str = Field(sa_type=sa.Text)
    ticket: str | None = Field(default=None, max_length=200)
    emergency: bool = False
    review_required: bool = False
    state: str = Field(max_length=16, index=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    decided_at: datetime | None = _ts()
    timeout_at: datetime | None = _ts()
    # The audit thread in the security channel: parent message's channel and ts.
    channel: str | None = Field(default=None, max_length=32)
    thread_ts: str | None = Field(default=None, max_length=32)
    # The submission that filed it (Slack's view id): a replayed submission files nothing.
    submission_key: str | None = Field(default=None, max_length=64, unique=True, index=True)
    # The maintenance window it was made in; `outside_window` is None where none applies.
    window: str | None = Field(default=None, max_length=64)
    outside_window: bool | None = None
    # Anomaly flags raised when it was filed: JSON, a list of {"kind", "reason"}.
    flags: str | None = Field(default=None, sa_type=sa.Text)
    # When its free text (justification, ticket, reasons, notes) was pruned after retention.
    details_pruned_at: datetime | None = _ts()


class Decision(SQLModel, table=True):
    __tablename__ = "decision"
    __table_args__ = (sa.UniqueConstraint("request_id", "approver", name="uq_decision_once"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="access_request.id", index=True)
    approver: str = Field(max_length=32)
    outcome: str = Field(max_length=16)  # approve | deny
    reason: str | None = Field(default=None, sa_type=sa.Text)
    decided_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class Grant(SQLModel, table=True):
    """What was issued for a request. Never the secret, never a live token: only accessors."""

    __tablename__ = "access_grant"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="access_request.id", unique=True)
    provider: str = Field(max_length=64)
    identity: str = Field(default="", max_length=200)  # known once the credential is read
    # Stored before any credential is read with the child token: recovery can always revoke.
    token_accessor: str = Field(max_length=128)
    lease_id: str | None = Field(default=None, max_length=300)
    wrap_accessor: str | None = Field(default=None, max_length=128)
    wrap_expires_at: datetime | None = _ts()
    revealed_at: datetime | None = _ts()
    # The requester's credential message, updated once the token is spent or the grant ends.
    dm_channel: str | None = Field(default=None, max_length=32)
    dm_ts: str | None = Field(default=None, max_length=32)
    issued_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    delivered_at: datetime | None = _ts()
    reveal_claimed_at: datetime | None = _ts()
    # Ending: the intent (who, why, which end) is recorded first, then retried until Vault
    # confirms; `ended_at` is set only then.
    ended_at: datetime | None = _ts()
    ended_by: str | None = Field(default=None, max_length=32)
    end_reason: str | None = Field(default=None, max_length=32)  # expired | revoked
    end_note: str | None = Field(default=None, sa_type=sa.Text)
    revoke_attempts: int = 0
    revoke_next_at: datetime | None = _ts()
    revoke_failing_since: datetime | None = _ts()
    revoke_error: str | None = Field(default=None, max_length=300)
    revoke_alerted: bool = False
    # What Vault's audit device (audit.vault_device) writes for the token accessor and the
    # lease id: joins this grant with Vault's audit log. None: no device, or unknown.
    accessor_hmac: str | None = Field(default=None, max_length=100)
    lease_hmac: str | None = Field(default=None, max_length=100)
    # The database user's oid, looked up at issue where the resource records `activity:`: its
    # pg_stat_statements rows are still found by it once the user is dropped.
    db_user_oid: int | None = Field(default=None, sa_type=sa.BigInteger)


class AuditEvent(SQLModel, table=True):
    """Append-only, hash-chained. `hash` covers every other column and the previous hash."""

    __tablename__ = "audit_event"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=32)
    request_id: int | None = Field(default=None, index=True)
    # Canonical JSON, redacted; None once pruned after its retention (its digest stays).
    details: str | None = Field(default=None, sa_type=sa.Text)
    # sha256 of `details` as first stored: what the hash covers (version 2).
    details_hash: str | None = Field(default=None, max_length=64)
    # Hash format: 1 covered the details themselves (events before migration 0005), 2 their
    # digest, so that details can be pruned and the chain still verifies.
    v: int = Field(default=2, sa_type=sa.SmallInteger, sa_column_kwargs={"server_default": "1"})
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """One row: the chain's last sequence and hash. Updating it first serializes writers."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    hash: str = Field(max_length=64)


class AuditCursor(SQLModel, table=True):
    """How far one forwarding sink got: the last audit event it received. Advanced in the
    transaction that holds this row locked while the events are sent."""

    __tablename__ = "audit_cursor"

    sink: str = Field(primary_key=True, max_length=64)
    seq: int = 0  # the last event the sink confirmed; the next one sent is seq + 1
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    attempts: int = 0  # failures in a row; 0 while the sink takes what it is sent
    next_attempt_at: datetime | None = _ts()  # backing off until then, on every replica
    failing_since: datetime | None = _ts()
    last_error: str | None = Field(default=None, max_length=300)


class OutboxEntry(SQLModel, table=True):
    """An effect the bot owes (a Slack message, a redelivery), recorded in the transaction
    that made it owed and carried out until done. Never a secret."""

    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int | None = Field(default=None, index=True)
    lane: str = Field(max_length=16)  # delivered in order per (request, lane)
    kind: str = Field(max_length=32)
    payload: str = Field(sa_type=sa.Text)  # JSON
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    claimed_until: datetime | None = _ts()
    done_at: datetime | None = _ts()
    last_error: str | None = Field(default=None, max_length=300)
    failed: bool = False  # done, but definitively impossible (logged)


class Review(SQLModel, table=True):
    """A post-incident review owed once a grant ended; open until someone closes it."""

    __tablename__ = "review"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="access_request.id", unique=True, index=True)
    owed_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    due_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    reminded_at: datetime | None = _ts()
    reviewer: str | None = Field(default=None, max_length=32)
    outcome: str | None = Field(
        default=None, max_length=32
    )  # legitimate | needs_follow_up | misuse
    notes: str | None = Field(default=None, sa_type=sa.Text)
    reviewed_at: datetime | None = _ts()


def create_db_engine(url: str) -> sa.Engine:
    """An engine for `url`; SQLite gets a busy timeout and foreign keys on."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


class Store:
    """The engine and one way to open a unit of work."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        # SQLite allows one writer; serialize our writers instead of failing on "locked".
        self._write_lock = (
            threading.RLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits together, or not at all."""
        with self._write_lock, Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
        # What waits for this commit (a worker to wake): run once the rows are visible.
        for hook in session.info.get("after_commit", ()):
            hook()

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session
