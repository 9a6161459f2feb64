"""The hot results path on PostgreSQL: one statement per group commit, plain asyncpg.

Through SQLAlchemy a group commit was five round trips (pool pre-ping, BEGIN, the
phase check, the multi-row INSERT, one UPDATE per batch, COMMIT) plus the ORM's
per-row parameter handling on the event loop. Here the rows travel as ten typed
arrays (asyncpg encodes them in binary, in C) into one statement whose CTEs do
all of it; outside a transaction block it commits by itself, so a group commit
is one round trip.

The semantics are those of the portable path (store/sql/results.py):

- rows of a batch not in its ``run`` phase are dropped: once finalization has
  claimed a batch a late result must neither land nor count. The batch rows are
  locked (``FOR NO KEY UPDATE``, in id order so two writers cannot deadlock), so
  a finalization claim either commits first (and this statement then sees the
  new phase) or waits for this commit (and then reads these rows);
- a line that already has a result keeps it (``ON CONFLICT DO NOTHING``), and only
  the rows inserted count towards the batch's counters and usage;
- the statement returns how many rows were new.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from batchd.states import BatchPhase
from batchd.store.records import ResultRow

_RECORD = f"""
WITH input AS (
    SELECT * FROM unnest(
        $1::text[], $2::int[], $3::text[], $4::bool[], $5::bytea[],
        $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[]
    ) AS r(batch_id, line_no, custom_id, ok, data,
           input_tokens, cached_tokens, output_tokens, reasoning_tokens, total_tokens)
),
running AS (
    SELECT id FROM batches
    WHERE phase = '{BatchPhase.RUN.value}' AND id IN (SELECT batch_id FROM input)
    ORDER BY id
    FOR NO KEY UPDATE
),
inserted AS (
    INSERT INTO results (batch_id, line_no, custom_id, ok, data)
    SELECT batch_id, line_no, custom_id, ok, data FROM input
    WHERE batch_id IN (SELECT id FROM running)
    ON CONFLICT (batch_id, line_no) DO NOTHING
    RETURNING batch_id, line_no
),
totals AS (
    SELECT i.batch_id,
           count(*) FILTER (WHERE i.ok) AS ok_n,
           count(*) FILTER (WHERE NOT i.ok) AS fail_n,
           sum(i.input_tokens) AS input_tokens,
           sum(i.cached_tokens) AS cached_tokens,
           sum(i.output_tokens) AS output_tokens,
           sum(i.reasoning_tokens) AS reasoning_tokens,
           sum(i.total_tokens) AS total_tokens
    FROM inserted JOIN input i USING (batch_id, line_no)
    GROUP BY i.batch_id
),
bumped AS (
    UPDATE batches b SET
        completed = b.completed + t.ok_n,
        failed = b.failed + t.fail_n,
        input_tokens = b.input_tokens + t.input_tokens,
        cached_tokens = b.cached_tokens + t.cached_tokens,
        output_tokens = b.output_tokens + t.output_tokens,
        reasoning_tokens = b.reasoning_tokens + t.reasoning_tokens,
        total_tokens = b.total_tokens + t.total_tokens
    FROM totals t WHERE b.id = t.batch_id
    RETURNING b.id
)
SELECT (SELECT count(*) FROM inserted) AS inserted, (SELECT count(*) FROM bumped) AS bumped
"""

_PAGE = """
SELECT line_no, ok, data FROM results
WHERE batch_id = $1 AND line_no > $2 ORDER BY line_no LIMIT $3
"""
PAGE_ROWS = 2000
"""Rows per page when reading results back (finalization): few round trips, a
bounded amount in memory."""


class PgResults:
    def __init__(self, pool: Callable[[], Any]) -> None:
        self._pool = pool
        """The dialect's asyncpg pool (asyncpg ships no type hints)."""

    async def record(self, rows: Sequence[ResultRow]) -> int:
        # A line sent twice in one group (a takeover re-sent it) is one row.
        unique = list({(row.batch_id, row.line_no): row for row in rows}.values())
        zeros = [0] * len(unique)
        usage = [row.usage for row in unique]
        columns = (
            [row.batch_id for row in unique],
            [row.line_no for row in unique],
            [row.custom_id for row in unique],
            [row.ok for row in unique],
            [row.data for row in unique],
            [u.input_tokens if u else 0 for u in usage] if any(usage) else zeros,
            [u.cached_tokens if u else 0 for u in usage] if any(usage) else zeros,
            [u.output_tokens if u else 0 for u in usage] if any(usage) else zeros,
            [u.reasoning_tokens if u else 0 for u in usage] if any(usage) else zeros,
            [u.total_tokens if u else 0 for u in usage] if any(usage) else zeros,
        )
        async with self._pool().acquire() as conn:
            found = await conn.fetchrow(_RECORD, *columns)
        assert found is not None
        return int(found["inserted"])

    async def iter_results(self, batch_id: str) -> AsyncIterator[tuple[int, bool, bytes]]:
        last = 0
        pool = self._pool()
        while True:
            async with pool.acquire() as conn:
                page = await conn.fetch(_PAGE, batch_id, last, PAGE_ROWS)
            for line_no, ok, data in page:
                yield line_no, ok, data
            if len(page) < PAGE_ROWS:
                return
            last = page[-1]["line_no"]
