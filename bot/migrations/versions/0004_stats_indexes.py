"""indexes for the break-glass metrics: requests by creation time, grants by issue time (a
period's figures read a month of a year's history, not all of it)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 10:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("access_request", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_access_request_created_at"), ["created_at"], unique=False
        )
    with op.batch_alter_table("access_grant", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_grant_issued_at"), ["issued_at"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("access_grant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_grant_issued_at"))
    with op.batch_alter_table("access_request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_request_created_at"))
