"""the database lets retention remove only the details of a finished request's events, once
that request is marked pruned and its review (if any) is done: not those of a live request,
a recent one under review, or of the events that belong to no request (anchors, prunings,
chain alerts)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 14:00:00

Revision 0005 let any UPDATE that only removed a version-2 event's details through (on
PostgreSQL, in a transaction with `breakglass.prune = on`), so whoever holds the bot's
database role could erase the justification of a live request from its trail and `audit
verify` would only count one more pruned event. The retention path marks the requests first
(`access_request.details_pruned_at`), then removes their events' details; the guard now
checks that mark, the request's state and its review.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PRUNE_ONLY = """
    NEW.details IS NULL AND NEW.v = 2 AND OLD.v = 2 AND NEW.details_hash IS NOT NULL
    AND NEW.seq = OLD.seq AND NEW.at = OLD.at AND NEW.actor = OLD.actor
    AND NEW.action = OLD.action AND NEW.request_id IS NOT DISTINCT FROM OLD.request_id
    AND NEW.details_hash = OLD.details_hash AND NEW.prev_hash = OLD.prev_hash
    AND NEW.hash = OLD.hash
"""
# The terminal states are frozen here (a migration never imports live code).
_OF_A_PRUNED_REQUEST = """
    AND OLD.request_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM access_request r WHERE r.id = OLD.request_id
                AND r.details_pruned_at IS NOT NULL
                AND r.state IN ('denied', 'timed_out', 'cancelled', 'expired', 'revoked',
                                'failed'))
    AND NOT EXISTS (SELECT 1 FROM review w WHERE w.request_id = OLD.request_id
                    AND w.reviewed_at IS NULL)
"""


def _pg(condition: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION breakglass_audit_event_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND current_setting('breakglass.prune', true) = 'on' THEN
    IF {condition} THEN
      RETURN NEW;
    END IF;
  END IF;
  RAISE EXCEPTION 'breakglass: % on audit_event refused: the audit trail is append-only',
    TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
"""


def _sqlite(condition: str) -> list[str]:
    condition = condition.replace("IS NOT DISTINCT FROM", "IS")
    return [
        "DROP TRIGGER IF EXISTS audit_event_append_only",
        f"CREATE TRIGGER audit_event_append_only BEFORE UPDATE ON audit_event "
        f"WHEN NOT ({condition}) BEGIN "
        "SELECT RAISE(ABORT, 'breakglass: UPDATE on audit_event refused: the audit trail is "
        "append-only'); END",
    ]


def _install(condition: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_pg(condition))
    else:
        for statement in _sqlite(condition):
            op.execute(statement)


def upgrade() -> None:
    """Upgrade schema."""
    _install(_PRUNE_ONLY + _OF_A_PRUNED_REQUEST)


def downgrade() -> None:
    """Downgrade schema."""
    _install(_PRUNE_ONLY)
