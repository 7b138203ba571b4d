"""the Vault audit HMACs of each grant's token accessor and lease id (audit.vault_device), and
the oid of its database user (activity:)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 11:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("access_grant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("accessor_hmac", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("lease_hmac", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("db_user_oid", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("access_grant", schema=None) as batch_op:
        batch_op.drop_column("db_user_oid")
        batch_op.drop_column("lease_hmac")
        batch_op.drop_column("accessor_hmac")
