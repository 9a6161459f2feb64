"""What differs between the SQL databases batchd runs on, in one place.

The queries (files.py, batches.py, ...) are written once in SQLAlchemy Core; what
they cannot say portably the dialect says for them:

- SQLite allows one writer at a time: rather than let concurrent writers spin on
  ``SQLITE_BUSY``, this process's writes queue behind one asyncio lock. Hot paths
  skip the async adapter: point reads on the event loop (store/sqlite_reads.py),
  group-committed results on a thread of their own (store/sqlite_results.py).
- PostgreSQL picks claim candidates with ``FOR UPDATE SKIP LOCKED`` (racing workers
  each get a different row instead of queueing on one), wakes other processes with
  ``NOTIFY`` in the transaction that creates work, and takes its hot paths through
  a plain asyncpg pool: results, one statement per group commit
  (store/pg_results.py), and point reads (store/pg_reads.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from batchd.store.notify import CHANNEL, WorkListener
from batchd.store.pg_reads import PgReader
from batchd.store.pg_results import PgResults
from batchd.store.records import ResultRow
from batchd.store.rows import RowLike
from batchd.store.sqlite_reads import SqliteReader
from batchd.store.sqlite_results import SqliteResultWriter

REGISTRY_LOCK = 0x62617463_6864
"""PostgreSQL advisory lock key of the worker registry ("batchd")."""


class PointReader(Protocol):
    """One row of ``files`` or ``batches`` by id, cheaper than the portable query."""

    async def one(
        self, table: str, key: str, *, tenant: str | None, live_only: bool = False
    ) -> RowLike | None: ...


class ResultPath(Protocol):
    """A faster way to the ``results`` table than the portable queries."""

    async def record(self, rows: Sequence[ResultRow]) -> int: ...

    def iter_results(self, batch_id: str) -> AsyncIterator[tuple[int, bool, bytes]] | None:
        """``None``: this path does not read (the portable query does)."""
        ...


class Dialect:
    """The portable defaults; the subclasses below override what their database needs."""

    name = "sql"
    reader: SqliteReader | None = None
    """Small pages without the async adapter, on the event loop (SQLite)."""
    points: PointReader | None = None
    """Point reads without the async adapter, where available."""
    results: ResultPath | None = None
    """The group-commit path for results, where one is faster than the portable one."""

    def engine_options(self) -> dict[str, Any]:
        return {}

    def prepare(self, engine: AsyncEngine) -> None:
        """Set up the engine once it exists (connection pragmas, say)."""

    def write_lock(self) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    def insert(self, table: Any) -> Any:
        """An INSERT that knows ``ON CONFLICT``."""
        raise NotImplementedError

    def skip_locked(self, query: Any, *of: Any) -> Any:
        return query

    async def notify(self, conn: AsyncConnection) -> None:
        """Tell other processes that work was created (inside its transaction)."""

    async def lock_registry(self, conn: AsyncConnection) -> None:
        """Serialize worker registrations with every other process's, to the end of the
        transaction. SQLite needs nothing: a registration writes first, which takes the
        database's one write lock."""

    def listener(self, callback: Callable[[], None]) -> WorkListener | None:
        return None

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class SqliteDialect(Dialect):
    name = "sqlite"

    def __init__(self, database: str | None, *, synchronous: str) -> None:
        self._synchronous = synchronous.upper()
        self._lock = _AsyncLock()
        self._writer: SqliteResultWriter | None = None
        if database and database != ":memory:":
            self._writer = SqliteResultWriter(database, synchronous=synchronous)
            self.reader = SqliteReader(database)
            self.points = _SqlitePoints(self.reader)
            self.results = _LockedSqliteResults(self._writer, self._lock)

    def engine_options(self) -> dict[str, Any]:
        return {"connect_args": {"timeout": 30}}

    def prepare(self, engine: AsyncEngine) -> None:
        sync_mode = self._synchronous

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sync_mode}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    def write_lock(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._lock

    def insert(self, table: Any) -> Any:
        return sqlite_insert(table)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.reader is not None:
            self.reader.close()


class PostgresDialect(Dialect):
    name = "postgresql"

    def __init__(self, url: str, *, pool_size: int) -> None:
        self._pool_size = pool_size
        # asyncpg takes the plain URL (no SQLAlchemy driver name).
        self._dsn = make_url(url).set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self._pool: Any = None  # asyncpg.Pool, made in open()
        self.results = PgResults(self._ready)
        self.points = PgReader(self._ready)

    def _ready(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the store was not opened (call open() first)")
        return self._pool

    def engine_options(self) -> dict[str, Any]:
        return {"pool_size": self._pool_size, "max_overflow": self._pool_size,
                "pool_pre_ping": True}  # fmt: skip

    def insert(self, table: Any) -> Any:
        return pg_insert(table)

    def skip_locked(self, query: Any, *of: Any) -> Any:
        return query.with_for_update(skip_locked=True, of=list(of) or None)

    async def notify(self, conn: AsyncConnection) -> None:
        await conn.execute(text(f"NOTIFY {CHANNEL}"))

    async def lock_registry(self, conn: AsyncConnection) -> None:
        # Rows of other workers are not locked by writing ours: take a lock of its own.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": REGISTRY_LOCK})

    def listener(self, callback: Callable[[], None]) -> WorkListener | None:
        return WorkListener(self._dsn, callback)

    async def open(self) -> None:
        if self._pool is None:
            # The hot paths: one group-commit writer per process, and the API's point
            # reads, which many polling clients make at once.
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=max(2, self._pool_size)
            )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def dialect_for(url: str, *, sqlite_synchronous: str, pool_size: int) -> Dialect:
    """The dialect of an async SQLAlchemy URL (see :func:`batchd.store.sql.async_url`)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return SqliteDialect(parsed.database, synchronous=sqlite_synchronous)
    if parsed.get_backend_name() == "postgresql":
        return PostgresDialect(url, pool_size=pool_size)
    raise ValueError(f"unsupported database {url!r}: use sqlite:/// or postgresql://")


class _LockedSqliteResults:
    """SQLite's result writer, queued behind the same lock as every other write."""

    def __init__(self, writer: SqliteResultWriter, lock: _AsyncLock) -> None:
        self._writer = writer
        self._lock = lock

    async def record(self, rows: Sequence[ResultRow]) -> int:
        async with self._lock:
            return await self._writer.record(rows)

    def iter_results(self, batch_id: str) -> AsyncIterator[tuple[int, bool, bytes]] | None:
        return None


class _SqlitePoints:
    """SQLite's point reads: a primary-key lookup on a WAL database takes
    microseconds and never waits for the writer, so it runs on the event loop."""

    def __init__(self, reader: SqliteReader) -> None:
        self._reader = reader

    async def one(
        self, table: str, key: str, *, tenant: str | None, live_only: bool = False
    ) -> RowLike | None:
        found: RowLike | None = self._reader.one(table, key, tenant=tenant, live_only=live_only)
        return found


class _AsyncLock:
    """An asyncio.Lock created lazily, inside the running loop."""

    def __init__(self) -> None:
        import asyncio

        self._lock: asyncio.Lock | None = None

    async def __aenter__(self) -> None:
        import asyncio

        if self._lock is None:
            self._lock = asyncio.Lock()
        await self._lock.acquire()

    async def __aexit__(self, *_exc: object) -> None:
        assert self._lock is not None
        self._lock.release()
