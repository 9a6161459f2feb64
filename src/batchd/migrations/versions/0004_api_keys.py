"""API keys in the database (``batchd keys``): digests, per-key limits and weights.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("tenant", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger),
        sa.Column("last_used_at", sa.BigInteger),
        sa.Column("max_enqueued_tokens", sa.BigInteger),
        sa.Column("max_enqueued_requests", sa.BigInteger),
        sa.Column("weight", sa.Float, nullable=False, server_default="1"),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
