"""The store: SQLModel tables, the engine and units of work, the audit chain, the outbox."""

from bot.store.tables import (
    OPEN_STATES,
    AccessRequest,
    AuditCursor,
    AuditEvent,
    AuditHead,
    Decision,
    Grant,
    OutboxEntry,
    Review,
    Store,
    UTCDateTime,
    create_db_engine,
)

__all__ = [
    "OPEN_STATES",
    "AccessRequest",
    "AuditCursor",
    "AuditEvent",
    "AuditHead",
    "Decision",
    "Grant",
    "OutboxEntry",
    "Review",
    "Store",
    "UTCDateTime",
    "create_db_engine",
]
