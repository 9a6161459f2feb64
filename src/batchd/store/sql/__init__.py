"""The SQL store: SQLite by default, PostgreSQL for many processes on many hosts.

One module per concern (files, batches, claims, results, workers), each a set of
queries over the shared engine and dialect (core.py, dialect.py), composed here
into the one class that implements :class:`batchd.store.base.Store`.
"""

from __future__ import annotations

from batchd.store.sql.batches import BatchQueries
from batchd.store.sql.claims import ClaimQueries
from batchd.store.sql.core import async_url
from batchd.store.sql.files import FileQueries
from batchd.store.sql.idempotency import IdempotencyQueries
from batchd.store.sql.keys import KeyQueries
from batchd.store.sql.queue import QueueQueries
from batchd.store.sql.results import ResultQueries
from batchd.store.sql.uploads import UploadQueries
from batchd.store.sql.workers import WorkerQueries

__all__ = ["SqlStore", "async_url"]


class SqlStore(
    FileQueries,
    BatchQueries,
    ClaimQueries,
    ResultQueries,
    WorkerQueries,
    UploadQueries,
    IdempotencyQueries,
    QueueQueries,
    KeyQueries,
):
    """Metadata of files and batches, shards and their claims, per-line results, and
    the worker registry, uploads, idempotency keys and API keys, in one SQL database."""
