"""Results: the durable outcome of each request line, recorded by group commit.

Each dialect may bring a faster path (SQLite: store/sqlite_results.py; PostgreSQL:
store/pg_results.py); the portable queries here are the reference for what every
path must do, and run where no faster one exists (an in-memory SQLite database).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from sqlalchemy import select, update

from batchd.states import BatchPhase
from batchd.store import schema
from batchd.store.records import ResultRow, Usage
from batchd.store.sql.core import SqlCore

_RESULT_PAGE = 500


class ResultQueries(SqlCore):
    async def done_lines(self, batch_id: str, first_line: int, last_line: int) -> set[int]:
        r = schema.results
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(r.c.line_no).where(
                    r.c.batch_id == batch_id, r.c.line_no.between(first_line, last_line)
                )
            )
            return {row[0] for row in rows}

    async def record_results(self, rows: Sequence[ResultRow]) -> int:
        """Store outcomes and bump the batches' counters, in one transaction.

        A line that already has a result keeps it (a re-sent request after a
        takeover must not be counted twice); returns how many rows were new.
        """
        if not rows:
            return 0
        fast = self.dialect.results
        if fast is not None:
            return await fast.record(rows)
        return await self._record_portably(rows)

    async def _record_portably(self, rows: Sequence[ResultRow]) -> int:
        r, t = schema.results, schema.batches
        by_key = {(row.batch_id, row.line_no): row for row in rows}
        async with self._write() as conn:
            running = set(
                (
                    await conn.execute(
                        select(t.c.id).where(
                            t.c.phase == BatchPhase.RUN, t.c.id.in_({b for b, _ in by_key})
                        )
                    )
                ).scalars()
            )
            # Once finalization has begun a late result must not count.
            params = [
                {
                    "batch_id": row.batch_id,
                    "line_no": row.line_no,
                    "custom_id": row.custom_id,
                    "ok": row.ok,
                    "data": row.data,
                }
                for row in by_key.values()
                if row.batch_id in running
            ]
            if not params:
                return 0
            stmt = (
                self.dialect.insert(r)
                .on_conflict_do_nothing(index_elements=["batch_id", "line_no"])
                .returning(r.c.batch_id, r.c.line_no)
            )
            inserted = (await conn.execute(stmt, params)).all()
            totals: dict[str, tuple[int, int, Usage]] = {}
            for batch_id, line_no in inserted:
                row = by_key[(batch_id, line_no)]
                ok_n, fail_n, usage = totals.get(batch_id, (0, 0, Usage()))
                if row.usage:
                    usage.add(row.usage)
                totals[batch_id] = (ok_n + row.ok, fail_n + (not row.ok), usage)
            for batch_id, (ok_n, fail_n, usage) in totals.items():
                await conn.execute(
                    update(t)
                    .where(t.c.id == batch_id)
                    .values(
                        completed=t.c.completed + ok_n,
                        failed=t.c.failed + fail_n,
                        input_tokens=t.c.input_tokens + usage.input_tokens,
                        cached_tokens=t.c.cached_tokens + usage.cached_tokens,
                        output_tokens=t.c.output_tokens + usage.output_tokens,
                        reasoning_tokens=t.c.reasoning_tokens + usage.reasoning_tokens,
                        total_tokens=t.c.total_tokens + usage.total_tokens,
                    )
                )
        return len(inserted)

    async def iter_results(self, batch_id: str) -> AsyncIterator[tuple[int, bool, bytes]]:
        """``(line_no, ok, data)`` in line order, a page at a time."""
        fast = self.dialect.results
        pages = fast.iter_results(batch_id) if fast is not None else None
        if pages is not None:
            async for item in pages:
                yield item
            return
        r = schema.results
        last = 0
        while True:
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(r.c.line_no, r.c.ok, r.c.data)
                        .where(r.c.batch_id == batch_id, r.c.line_no > last)
                        .order_by(r.c.line_no)
                        .limit(_RESULT_PAGE)
                    )
                ).all()
            for row in rows:
                yield row.line_no, row.ok, row.data
            if len(rows) < _RESULT_PAGE:
                return
            last = rows[-1].line_no

    async def purge_results(self, batch_id: str) -> None:
        """Drop per-line results once they live in the output files."""
        async with self._write() as conn:
            await conn.execute(schema.results.delete().where(schema.results.c.batch_id == batch_id))
            await conn.execute(schema.shards.delete().where(schema.shards.c.batch_id == batch_id))
