"""intent first: the outbox, ending with retries, one open request per person and resource
enforced by the database, the submission key that makes a replay file nothing

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 06:51:12.722204

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("lane", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("failed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_next_attempt_at"), ["next_attempt_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_outbox_request_id"), ["request_id"], unique=False)

    with op.batch_alter_table("access_grant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("reveal_claimed_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("end_note", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("revoke_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("revoke_next_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("revoke_failing_since", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("revoke_error", sa.String(length=300), nullable=True))
        batch_op.add_column(
            sa.Column("revoke_alerted", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    with op.batch_alter_table("access_request", schema=None) as batch_op:
        batch_op.add_column(sa.Column("submission_key", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "uq_access_request_open",
            ["requester", "resource"],
            unique=True,
            postgresql_where=sa.text("state IN ('pending', 'approved', 'active', 'ending')"),
            sqlite_where=sa.text("state IN ('pending', 'approved', 'active', 'ending')"),
        )
        batch_op.create_index(
            batch_op.f("ix_access_request_submission_key"), ["submission_key"], unique=True
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("access_request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_request_submission_key"))
        batch_op.drop_index(
            "uq_access_request_open",
            postgresql_where=sa.text("state IN ('pending', 'approved', 'active', 'ending')"),
            sqlite_where=sa.text("state IN ('pending', 'approved', 'active', 'ending')"),
        )
        batch_op.drop_column("submission_key")

    with op.batch_alter_table("access_grant", schema=None) as batch_op:
        batch_op.drop_column("revoke_alerted")
        batch_op.drop_column("revoke_error")
        batch_op.drop_column("revoke_failing_since")
        batch_op.drop_column("revoke_next_at")
        batch_op.drop_column("revoke_attempts")
        batch_op.drop_column("end_note")
        batch_op.drop_column("reveal_claimed_at")
        batch_op.drop_column("delivered_at")

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_request_id"))
        batch_op.drop_index(batch_op.f("ix_outbox_next_attempt_at"))

    op.drop_table("outbox")
