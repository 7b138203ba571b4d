"""The store: SQLModel tables, the engine and units of work, the audit chain, the outbox."""

from bot.store.tables import (
    AccessRequest,
    AuditEvent,
    AuditHead,
    Decision,
    Grant,
    Review,
    Store,
    UTCDateTime,
    create_db_engine,
)

__all__ = [
    "AccessRequest",
    "AuditEvent",
    "AuditHead",
    "Decision",
    "Grant",
    "Review",
    "Store",
    "UTCDateTime",
    "create_db_engine",
]
