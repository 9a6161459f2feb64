"""The contract suite runs every case against each store: SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from batchd.store.sql import SqlStore
from store.pg import fresh_database


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'batchd.db'}"
    else:
        with fresh_database() as url:
            yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    s = SqlStore(database_url)
    await s.open()
    yield s
    await s.close()
