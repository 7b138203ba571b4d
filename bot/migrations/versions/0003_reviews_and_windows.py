"""reviews owed and closed, where each request fell against the maintenance windows, and the
anomaly flags raised when it was filed

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 09:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("access_request", schema=None) as batch_op:
        batch_op.add_column(sa.Column("window", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("outside_window", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("flags", sa.Text(), nullable=True))

    # The review table of 0001 was never written to: it is replaced by one row per review
    # owed, open until someone closes it.
    op.drop_table("review")
    op.create_table(
        "review",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("owed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewer", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"], ["access_request.id"], name=op.f("fk_review_request_id_access_request")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review")),
    )
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_request_id"), ["request_id"], unique=True)
        batch_op.create_index(batch_op.f("ix_review_due_at"), ["due_at"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_due_at"))
        batch_op.drop_index(batch_op.f("ix_review_request_id"))
    op.drop_table("review")
    op.create_table(
        "review",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["access_request.id"], name=op.f("fk_review_request_id_access_request")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review")),
    )
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_request_id"), ["request_id"], unique=False)
    with op.batch_alter_table("access_request", schema=None) as batch_op:
        batch_op.drop_column("flags")
        batch_op.drop_column("outside_window")
        batch_op.drop_column("window")
