"""Table definitions (SQLAlchemy Core), shared by every SQL dialect.

This is the current shape of the database; the migrations in ``batchd.migrations``
build it step by step (a change here needs a new migration there).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# BigInteger primary keys autoincrement on PostgreSQL; on SQLite the variant keeps
# them aliases of ROWID.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")

files = Table(
    "files",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("tenant", String(64), nullable=False),
    Column("filename", Text, nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger),
    Column("status", String(16), nullable=False),
    Column("status_details", Text),
    Column("deleted_at", BigInteger),
    Index("ix_files_tenant_seq", "tenant", "seq"),
)

batches = Table(
    "batches",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("tenant", String(64), nullable=False),
    Column("input_file_id", String(64), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    # Internal phase: validate -> run -> finalize -> done (status is what users see).
    Column("phase", String(16), nullable=False),
    Column("model", Text),
    Column("metadata", JSON),
    Column("errors", JSON),
    Column("output_file_id", String(64)),
    Column("error_file_id", String(64)),
    Column("created_at", BigInteger, nullable=False),
    Column("in_progress_at", BigInteger),
    Column("expires_at", BigInteger, nullable=False),
    Column("finalizing_at", BigInteger),
    Column("completed_at", BigInteger),
    Column("failed_at", BigInteger),
    Column("expired_at", BigInteger),
    Column("cancelling_at", BigInteger),
    Column("cancelled_at", BigInteger),
    Column("total", Integer, nullable=False, default=0),
    Column("completed", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("cached_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("reasoning_tokens", BigInteger, nullable=False, default=0),
    Column("total_tokens", BigInteger, nullable=False, default=0),
    Column("output_expires_after", Integer),
    Column("stop_reason", String(16)),
    # Higher runs first (``metadata.priority``); equal priorities share fairly.
    Column("priority", Integer, nullable=False, default=0, server_default="0"),
    # What the batch counts against its key's queue limits while unfinished (set when
    # validation admits it; see store/sql/queue.py).
    Column("enqueued_tokens", BigInteger, nullable=False, default=0, server_default="0"),
    Column("enqueued_requests", BigInteger, nullable=False, default=0, server_default="0"),
    # Claims for the whole-batch phases (validating, finalizing).
    Column("lease_owner", String(128)),
    Column("lease_until", Float),
    Index("ix_batches_tenant_seq", "tenant", "seq"),
    Index("ix_batches_phase", "phase"),
)

shards = Table(
    "shards",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("shard_no", Integer, primary_key=True),
    Column("start_offset", BigInteger, nullable=False),
    Column("end_offset", BigInteger, nullable=False),
    Column("first_line", Integer, nullable=False),
    Column("last_line", Integer, nullable=False),
    Column("n_tasks", Integer, nullable=False),
    Column("done", Boolean, nullable=False, default=False),
    Column("lease_owner", String(128)),
    Column("lease_until", Float),
    Index("ix_shards_open", "done", "batch_id"),
    Index("ix_shards_lease_owner", "lease_owner"),
)

results = Table(
    "results",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("custom_id", Text, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

workers = Table(
    "workers",
    metadata,
    # Live workers, renewed by heartbeat: per-backend concurrency limits are divided
    # among the workers that currently send to that backend (engine/limits.py).
    Column("owner", String(128), primary_key=True),
    Column("heartbeat_at", Float, nullable=False),
    Column("backends", JSON),
)

uploads = Table(
    "uploads",
    metadata,
    # A large file sent in parts (the Uploads API); becomes a File on completion.
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("tenant", String(64), nullable=False),
    Column("filename", Text, nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("mime_type", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("file_id", String(64)),
    Column("file_expires_after", Integer),
    Column("purged", Boolean, nullable=False, default=False, server_default="0"),
    Index("ix_uploads_purge", "purged", "expires_at"),
)

upload_parts = Table(
    "upload_parts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("upload_id", String(64), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_upload_parts_upload", "upload_id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # The primary key is what makes two concurrent requests with one key safe: only
    # one INSERT wins; the other reads the winner's row.
    Column("tenant", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("object_id", String(64)),
    Column("response", JSON),
    Index("ix_idempotency_keys_expires", "expires_at"),
)

tenant_queues = Table(
    "tenant_queues",
    metadata,
    # One row per API key, written by every queue-limit admission: the row lock
    # serializes admissions of one key on PostgreSQL (SQLite has one writer anyway),
    # so two batches validating at once cannot both pass a limit.
    Column("tenant", String(64), primary_key=True),
    Column("admissions", BigInteger, nullable=False, default=0),
)

api_keys = Table(
    "api_keys",
    metadata,
    # Keys created with ``batchd keys create``: only the SHA-256 of the secret is kept.
    # ``tenant`` is derived from the secret as for a static ``--api-key`` key, so each key
    # is its own tenant either way. A revoked key keeps its row (its name and usage).
    Column("name", String(64), primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("tenant", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
    Column("last_used_at", BigInteger),
    Column("max_enqueued_tokens", BigInteger),
    Column("max_enqueued_requests", BigInteger),
    Column("weight", Float, nullable=False, default=1.0, server_default="1"),
)
