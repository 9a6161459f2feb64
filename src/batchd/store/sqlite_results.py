"""The hot write path on SQLite: recording results without the ORM round trips.

Measured (bench/bench_service.py, 10,000 lines): through SQLAlchemy's async engine
each group commit cost about 1 ms of event-loop CPU in thread hops and statement
handling, a third of batchd's whole per-request cost. Here one call runs the whole
transaction on a dedicated thread with a plain ``sqlite3`` connection: one hop per
commit, and the SQLite C code runs without the GIL.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from batchd.store.records import ResultRow, Usage

_INSERT = (
    "INSERT OR IGNORE INTO results (batch_id, line_no, custom_id, ok, data) VALUES (?, ?, ?, ?, ?)"
)
_BUMP = (
    "UPDATE batches SET completed = completed + ?, failed = failed + ?, "
    "input_tokens = input_tokens + ?, cached_tokens = cached_tokens + ?, "
    "output_tokens = output_tokens + ?, reasoning_tokens = reasoning_tokens + ?, "
    "total_tokens = total_tokens + ? WHERE id = ?"
)


class SqliteResultWriter:
    def __init__(self, path: str, *, synchronous: str) -> None:
        self._path = path
        self._synchronous = synchronous
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-results")
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None,
                                   check_same_thread=False)  # fmt: skip
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
            self._conn = conn
        return self._conn

    async def record(self, rows: Sequence[ResultRow]) -> int:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._record, rows)

    def _record(self, rows: Sequence[ResultRow]) -> int:
        conn = self._connection()
        totals: dict[str, tuple[int, int, Usage]] = {}
        inserted = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            running = _running_batches(conn, {row.batch_id for row in rows})
            for row in rows:
                if row.batch_id not in running:
                    continue  # finalization has begun: a late result must not count
                cur = conn.execute(
                    _INSERT, (row.batch_id, row.line_no, row.custom_id, row.ok, row.data)
                )
                if cur.rowcount != 1:
                    continue  # this line already has its result: count it once only
                inserted += 1
                ok_n, fail_n, usage = totals.get(row.batch_id, (0, 0, Usage()))
                if row.usage:
                    usage.add(row.usage)
                totals[row.batch_id] = (ok_n + row.ok, fail_n + (not row.ok), usage)
            for batch_id, (ok_n, fail_n, u) in totals.items():
                conn.execute(
                    _BUMP,
                    (ok_n, fail_n, u.input_tokens, u.cached_tokens, u.output_tokens,
                     u.reasoning_tokens, u.total_tokens, batch_id),
                )  # fmt: skip
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return inserted

    def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._pool.submit(_close).result()
        self._pool.shutdown(wait=True)


def _running_batches(conn: sqlite3.Connection, batch_ids: set[str]) -> set[str]:
    marks = ",".join("?" * len(batch_ids))
    cur = conn.execute(
        f"SELECT id FROM batches WHERE phase = 'run' AND id IN ({marks})", tuple(batch_ids)
    )
    return {r[0] for r in cur}
