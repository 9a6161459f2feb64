"""Point reads on PostgreSQL without SQLAlchemy's async adapter.

Polling clients mostly ask for one batch or one file by id. Through SQLAlchemy
each such read on PostgreSQL is a pool pre-ping, an implicit BEGIN, the query and
a ROLLBACK, plus a greenlet switch per statement (profiled: ``get_batch`` took 7%
of a one-process batchd's CPU on PostgreSQL during a 10,000-line batch polled
every 50 ms, 1.3% on SQLite, whose point reads skip the adapter too: see
store/sqlite_reads.py). Here it is one prepared statement on a plain asyncpg
connection, outside a transaction block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

_JSON_COLUMNS = frozenset({"metadata", "errors"})
_TABLES = frozenset({"files", "batches"})


class MappingRow:
    """An asyncpg ``Record`` dressed like a SQLAlchemy row for the shared converters."""

    __slots__ = ("_mapping",)

    def __init__(self, record: Any) -> None:
        values = dict(record.items())
        for key in _JSON_COLUMNS & values.keys():
            if isinstance(values[key], str):  # json columns arrive as text
                values[key] = orjson.loads(values[key])
        self._mapping = values


class PgReader:
    def __init__(self, pool: Callable[[], Any]) -> None:
        self._pool = pool

    async def one(
        self, table: str, key: str, *, tenant: str | None, live_only: bool = False
    ) -> MappingRow | None:
        if table not in _TABLES:
            raise ValueError(f"no point reads on {table!r}")
        sql = f"SELECT * FROM {table} WHERE id = $1"
        params: list[Any] = [key]
        if tenant is not None:
            sql += " AND tenant = $2"
            params.append(tenant)
        if live_only:
            sql += " AND deleted_at IS NULL"
        async with self._pool().acquire() as conn:
            found = await conn.fetchrow(sql, *params)
        return MappingRow(found) if found is not None else None
