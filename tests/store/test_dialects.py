"""Each database gets the dialect (and so the hot paths) meant for it.

The contract cases in test_state_machine.py run on every implementation; this
checks that the implementations are the ones they claim to be, so the
``sqlite-memory`` case really exercises the portable queries.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchd.store.sql import SqlStore
from batchd.store.sql.dialect import PostgresDialect, SqliteDialect

pytestmark = pytest.mark.anyio


def test_sqlite_file_has_its_fast_paths(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'b.db'}")
    assert isinstance(store.dialect, SqliteDialect)
    assert store.dialect.reader is not None and store.dialect.results is not None


def test_in_memory_sqlite_uses_the_portable_queries() -> None:
    store = SqlStore("sqlite:///:memory:")
    assert isinstance(store.dialect, SqliteDialect)
    assert store.dialect.reader is None and store.dialect.results is None


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgres_gets_its_dialect(database_url: str) -> None:
    store = SqlStore(database_url)
    assert isinstance(store.dialect, PostgresDialect)
    await store.open()
    await store.close()


def test_unknown_databases_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="unsupported database"):
        SqlStore("mysql://u@h/db")
