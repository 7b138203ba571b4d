"""the audit chain hashes each event's details by their digest (so details can be pruned
after their retention without breaking the chain), and the database refuses to change or
remove an event, or to move the chain's head back

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 11:00:00

Events written before this revision keep their hash format (version 1, which covers the
details themselves); they verify as before and are never pruned.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# An UPDATE of an event may only remove the details of a version-2 event, all else equal:
# its hash keeps the digest of what was removed, so the chain still verifies.
_PRUNE_ONLY = """
    NEW.details IS NULL AND NEW.v = 2 AND OLD.v = 2 AND NEW.details_hash IS NOT NULL
    AND NEW.seq = OLD.seq AND NEW.at = OLD.at AND NEW.actor = OLD.actor
    AND NEW.action = OLD.action AND NEW.request_id IS NOT DISTINCT FROM OLD.request_id
    AND NEW.details_hash = OLD.details_hash AND NEW.prev_hash = OLD.prev_hash
    AND NEW.hash = OLD.hash
"""

_PG = f"""
CREATE FUNCTION breakglass_audit_event_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND current_setting('breakglass.prune', true) = 'on' THEN
    IF {_PRUNE_ONLY} THEN
      RETURN NEW;
    END IF;
  END IF;
  RAISE EXCEPTION 'breakglass: % on audit_event refused: the audit trail is append-only',
    TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE FUNCTION breakglass_audit_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF NEW.id = OLD.id AND NEW.seq >= OLD.seq THEN
      RETURN NEW;
    END IF;
  END IF;
  RAISE EXCEPTION 'breakglass: % on audit_head refused: the audit trail is append-only',
    TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event
  FOR EACH ROW EXECUTE FUNCTION breakglass_audit_event_guard();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
  FOR EACH STATEMENT EXECUTE FUNCTION breakglass_audit_event_guard();
CREATE TRIGGER audit_head_forward_only BEFORE UPDATE OR DELETE ON audit_head
  FOR EACH ROW EXECUTE FUNCTION breakglass_audit_head_guard();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
  FOR EACH STATEMENT EXECUTE FUNCTION breakglass_audit_head_guard();
"""

_SQLITE_PRUNE_ONLY = _PRUNE_ONLY.replace("IS NOT DISTINCT FROM", "IS")
_SQLITE = [
    "CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event BEGIN "
    "SELECT RAISE(ABORT, 'breakglass: DELETE on audit_event refused: the audit trail is "
    "append-only'); END",
    f"CREATE TRIGGER audit_event_append_only BEFORE UPDATE ON audit_event "
    f"WHEN NOT ({_SQLITE_PRUNE_ONLY}) BEGIN "
    "SELECT RAISE(ABORT, 'breakglass: UPDATE on audit_event refused: the audit trail is "
    "append-only'); END",
    "CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head "
    "WHEN NEW.seq < OLD.seq OR NEW.id <> OLD.id BEGIN "
    "SELECT RAISE(ABORT, 'breakglass: UPDATE on audit_head refused: the audit trail is "
    "append-only'); END",
    "CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head BEGIN "
    "SELECT RAISE(ABORT, 'breakglass: DELETE on audit_head refused: the audit trail is "
    "append-only'); END",
]


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("access_request", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("details_pruned_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("v", sa.SmallInteger(), nullable=False, server_default=sa.text("1"))
        )
        batch_op.add_column(sa.Column("details_hash", sa.String(length=64), nullable=True))
        batch_op.alter_column("details", existing_type=sa.Text(), nullable=True)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG)
    else:
        for statement in _SQLITE:
            op.execute(statement)


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        for table in ("audit_event", "audit_head"):
            for trigger in (
                f"{table}_append_only",
                f"{table}_forward_only",
                f"{table}_no_truncate",
            ):
                op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
        op.execute("DROP FUNCTION IF EXISTS breakglass_audit_event_guard()")
        op.execute("DROP FUNCTION IF EXISTS breakglass_audit_head_guard()")
    else:
        for trigger in (
            "audit_event_no_delete",
            "audit_event_append_only",
            "audit_head_forward_only",
            "audit_head_no_delete",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.alter_column("details", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("details_hash")
        batch_op.drop_column("v")
    with op.batch_alter_table("access_request", schema=None) as batch_op:
        batch_op.drop_column("details_pruned_at")
