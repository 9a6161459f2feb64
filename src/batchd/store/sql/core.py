"""The engine, the dialect and the write transaction every SQL query module shares.

Every store method is one short transaction. Writes go through :meth:`SqlCore._write`
(the dialect decides whether this process's writers queue: SQLite's single writer);
reads take a plain connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from batchd.store.migrate import upgrade
from batchd.store.notify import WorkListener
from batchd.store.sql.dialect import Dialect, dialect_for

READER_PAGE_LIMIT = 1000
"""Pages up to this size are read on the event loop where the dialect has a reader
(store/sqlite_reads.py); larger ones go through the async engine, so one request
cannot stall the loop."""


def async_url(url: str) -> str:
    """The SQLAlchemy async URL for a plain one: ``postgresql://`` (or ``postgres://``)
    uses asyncpg, ``sqlite://`` aiosqlite; URLs naming a driver are kept."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    driver = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
    driver["sqlite"] = "sqlite+aiosqlite"
    return f"{driver.get(scheme, scheme)}://{rest}"


class SqlCore:
    def __init__(
        self, url: str, *, sqlite_synchronous: str = "NORMAL", pool_size: int = 10
    ) -> None:
        url = async_url(url)
        self.url = url
        self.dialect: Dialect = dialect_for(
            url, sqlite_synchronous=sqlite_synchronous, pool_size=pool_size
        )
        self.engine: AsyncEngine = create_async_engine(url, **self.dialect.engine_options())
        self.dialect.prepare(self.engine)

    async def open(self) -> None:
        """Bring the database to the current schema (versioned migrations)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(upgrade)
        await self.dialect.open()

    async def close(self) -> None:
        await self.dialect.close()
        await self.engine.dispose()

    def listener(self, callback: Callable[[], None]) -> WorkListener | None:
        """Calls ``callback`` when another process creates work (PostgreSQL only)."""
        return self.dialect.listener(callback)

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self.dialect.write_lock(), self.engine.begin() as conn:
            yield conn
