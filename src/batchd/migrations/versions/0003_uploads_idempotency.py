"""Uploads (large files in parts), idempotency keys, queue-limit counters.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("mime_type", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("file_id", sa.String(64)),
        sa.Column("file_expires_after", sa.Integer),
        sa.Column("purged", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_uploads_purge", "uploads", ["purged", "expires_at"])
    op.create_table(
        "upload_parts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("upload_id", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_upload_parts_upload", "upload_parts", ["upload_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("object_id", sa.String(64)),
        sa.Column("response", sa.JSON),
    )
    op.create_index("ix_idempotency_keys_expires", "idempotency_keys", ["expires_at"])
    op.create_table(
        "tenant_queues",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("admissions", sa.BigInteger, nullable=False, server_default="0"),
    )
    with op.batch_alter_table("batches") as batch:
        batch.add_column(
            sa.Column("enqueued_tokens", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("enqueued_requests", sa.BigInteger, nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("enqueued_requests")
        batch.drop_column("enqueued_tokens")
    op.drop_table("tenant_queues")
    op.drop_index("ix_idempotency_keys_expires", "idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index("ix_upload_parts_upload", "upload_parts")
    op.drop_table("upload_parts")
    op.drop_index("ix_uploads_purge", "uploads")
    op.drop_table("uploads")
