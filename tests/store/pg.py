"""Throwaway PostgreSQL databases for tests: one fresh database each, dropped after.

The server is the one on this machine (``BATCHD_TEST_PG``, default
``postgresql://postgres@127.0.0.1:5432/test``); tests never touch the database
named there, only the ``batchd_test_<random>`` databases they create. Without a
reachable server the tests skip, or fail under ``BATCHD_TEST_REQUIRE=pg`` (CI).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

import require

ADMIN_URL = os.environ.get("BATCHD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres_available() -> bool:
    try:
        asyncio.run(_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database; yields its plain ``postgresql://`` URL."""
    if not postgres_available():
        require.missing(
            "pg", f"PostgreSQL not reachable at {ADMIN_URL} (scripts/services.sh starts it)"
        )
    name = f"batchd_test_{secrets.token_hex(6)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(ADMIN_URL, name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
