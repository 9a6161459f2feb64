"""Versioned migrations: fresh databases reach head, legacy SQLite files are stamped."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect

from batchd.store.migrate import current_revision
from batchd.store.sql import SqlStore, async_url

pytestmark = pytest.mark.anyio
HEAD = "0004"


async def test_fresh_database_reaches_head(store: SqlStore) -> None:
    async with store.engine.connect() as conn:
        assert await conn.run_sync(current_revision) == HEAD
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"files", "batches", "shards", "results", "workers"} <= tables
    # Opening again (a second process, a restart) is a no-op.
    await store.open()


async def test_legacy_create_all_sqlite_is_stamped_and_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "batchd.db"
    legacy = sqlite3.connect(path)
    legacy.executescript((Path(__file__).parent / "legacy_schema.sql").read_text())
    legacy.execute(
        "INSERT INTO batches (id, tenant, input_file_id, endpoint, completion_window, status,"
        " phase, created_at, expires_at, total, completed, failed, input_tokens, cached_tokens,"
        " output_tokens, reasoning_tokens, total_tokens) VALUES ('batch_old', 't', 'file-x',"
        " '/v1/chat/completions', '24h', 'completed', 'done', 1, 2, 3, 3, 0, 0, 0, 0, 0, 0)"
    )
    legacy.commit()
    legacy.close()
    store = SqlStore(f"sqlite:///{path}")
    await store.open()
    try:
        old = await store.get_batch("batch_old", tenant="t")
        assert old is not None and (old.status, old.completed, old.priority) == ("completed", 3, 0)
        async with store.engine.connect() as conn:
            assert await conn.run_sync(current_revision) == HEAD
    finally:
        await store.close()


def test_plain_urls_map_to_async_drivers() -> None:
    assert async_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_url("sqlite:////x/batchd.db") == "sqlite+aiosqlite:////x/batchd.db"
