"""Scale-out: batch priority, the worker registry, an index for heartbeats.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("priority", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_shards_lease_owner", "shards", ["lease_owner"])
    op.create_table(
        "workers",
        sa.Column("owner", sa.String(128), primary_key=True),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("backends", sa.JSON),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_index("ix_shards_lease_owner", "shards")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("priority")
