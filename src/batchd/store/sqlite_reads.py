"""The hot read path on SQLite: point lookups without the async adapter.

Polling clients mostly ask for one batch or one file by id. Through SQLAlchemy's
async engine each such read costs a greenlet switch and a thread hop per
statement (measured: about 1.3 ms of server CPU per ``GET /v1/batches/{id}``, of
which ``/health`` alone is 0.2 ms). A primary-key lookup on a WAL database takes
microseconds and never waits for the writer, so it runs right on the event loop
through a plain ``sqlite3`` connection.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

_JSON_COLUMNS = frozenset({"metadata", "errors"})


class MappingRow:
    """A ``sqlite3.Row`` dressed like a SQLAlchemy row for the shared converters."""

    __slots__ = ("_mapping",)

    def __init__(self, row: sqlite3.Row) -> None:
        values: dict[str, Any] = {}
        for key in row.keys():  # noqa: SIM118 - sqlite3.Row is not a dict
            value = row[key]
            if key in _JSON_COLUMNS and isinstance(value, str):
                value = orjson.loads(value)
            values[key] = value
        self._mapping = values


class SqliteReader:
    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, timeout=5, isolation_level=None,
                                   check_same_thread=False)  # fmt: skip
            conn.execute("PRAGMA query_only=1")
            conn.row_factory = sqlite3.Row
            self._conn = conn
        return self._conn

    def one(self, table: str, key: str, *, tenant: str | None, live_only: bool = False) -> Any:
        sql = f"SELECT * FROM {table} WHERE id = ?"
        params: list[Any] = [key]
        if tenant is not None:
            sql += " AND tenant = ?"
            params.append(tenant)
        if live_only:
            sql += " AND deleted_at IS NULL"
        row = self._connection().execute(sql, params).fetchone()
        return MappingRow(row) if row is not None else None

    def page(
        self,
        table: str,
        *,
        tenant: str,
        after: str | None,
        limit: int,
        descending: bool = True,
        where: str = "",
        params: tuple[Any, ...] = (),
    ) -> list[MappingRow]:
        """Up to ``limit`` rows of one tenant in ``seq`` order, after the row ``after``
        (an id of that tenant; an unknown one is ignored, as on the general path)."""
        conn = self._connection()
        sql = f"SELECT * FROM {table} WHERE tenant = ?{where}"
        args: list[Any] = [tenant, *params]
        if after:
            found = conn.execute(
                f"SELECT seq FROM {table} WHERE id = ? AND tenant = ?", (after, tenant)
            ).fetchone()
            if found is not None:
                sql += " AND seq < ?" if descending else " AND seq > ?"
                args.append(found[0])
        sql += f" ORDER BY seq {'DESC' if descending else 'ASC'} LIMIT ?"
        args.append(limit)
        return [MappingRow(r) for r in conn.execute(sql, args).fetchall()]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
