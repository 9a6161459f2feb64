"""The contract suite runs every case against each store implementation.

- ``sqlite``: a SQLite file, with its fast paths (reads on the event loop, results
  on a thread of their own);
- ``sqlite-memory``: in-memory SQLite, which has no fast paths: the portable
  queries every dialect falls back to;
- ``postgres``: a fresh PostgreSQL database (results through plain asyncpg).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from batchd.store.base import Store
from batchd.store.sql import SqlStore
from store.pg import fresh_database


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "sqlite-memory", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'batchd.db'}"
    elif request.param == "sqlite-memory":
        yield "sqlite:///:memory:"
    else:
        with fresh_database() as url:
            yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s: Store = SqlStore(database_url)
    await s.open()
    yield s
    await s.close()
