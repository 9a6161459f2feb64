"""Batches: creation, the API's reads, cancel and expiry, and the whole-batch phase moves."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, insert, select, update

from batchd.states import RUNNING_STATUSES, BatchPhase, BatchStatus, StopReason
from batchd.store import schema
from batchd.store.records import BatchRecord, FileRecord, Page, ShardRecord, priority_of
from batchd.store.rows import _batch, _batch_values, _file_values
from batchd.store.sql.core import READER_PAGE_LIMIT, SqlCore

_STAMP = {
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.CANCELLED: "cancelled_at",
    BatchStatus.EXPIRED: "expired_at",
}
"""The timestamp column each final status of :meth:`BatchQueries.finish_batch` sets."""


class BatchQueries(SqlCore):
    async def insert_batch(self, rec: BatchRecord) -> None:
        async with self._write() as conn:
            values = _batch_values(rec)
            values["priority"] = rec.priority or priority_of(rec.metadata)
            await conn.execute(insert(schema.batches).values(**values))
            await self.dialect.notify(conn)

    async def get_batch(self, batch_id: str, *, tenant: str | None) -> BatchRecord | None:
        points = self.dialect.points
        if points is not None:
            found = await points.one("batches", batch_id, tenant=tenant)
            return _batch(found) if found is not None else None
        query = select(schema.batches).where(schema.batches.c.id == batch_id)
        if tenant is not None:
            query = query.where(schema.batches.c.tenant == tenant)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _batch(row) if row else None

    async def list_batches(
        self, *, tenant: str, after: str | None, limit: int
    ) -> Page[BatchRecord]:
        reader = self.dialect.reader
        if reader is not None and limit <= READER_PAGE_LIMIT:
            found = reader.page("batches", tenant=tenant, after=after, limit=limit + 1)
            return Page([_batch(r) for r in found[:limit]], has_more=len(found) > limit)
        t = schema.batches
        query = select(t).where(t.c.tenant == tenant)
        async with self.engine.connect() as conn:
            if after:
                cursor = (
                    await conn.execute(select(t.c.seq).where(t.c.id == after, t.c.tenant == tenant))
                ).scalar()
                if cursor is not None:
                    query = query.where(t.c.seq < cursor)
            rows = (await conn.execute(query.order_by(t.c.seq.desc()).limit(limit + 1))).all()
        return Page([_batch(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def request_cancel(self, batch_id: str, *, tenant: str, now: int) -> BatchRecord | None:
        """Move a running batch to ``cancelling``; a finished one is returned unchanged."""
        t = schema.batches
        async with self._write() as conn:
            await conn.execute(
                update(t)
                .where(
                    t.c.id == batch_id,
                    t.c.tenant == tenant,
                    t.c.status.in_(RUNNING_STATUSES),
                )
                .values(
                    status=BatchStatus.CANCELLING, cancelling_at=now, stop_reason=StopReason.CANCEL
                )
            )
            await self.dialect.notify(conn)
            row = (
                await conn.execute(select(t).where(t.c.id == batch_id, t.c.tenant == tenant))
            ).first()
        return _batch(row) if row else None

    async def request_expiry(self, now: int) -> int:
        """Flag every running batch whose window has passed; returns how many."""
        t = schema.batches
        async with self._write() as conn:
            res = await conn.execute(
                update(t)
                .where(
                    t.c.phase.in_((BatchPhase.VALIDATE, BatchPhase.RUN)),
                    t.c.stop_reason.is_(None),
                    t.c.expires_at <= now,
                )
                .values(stop_reason=StopReason.EXPIRE)
            )
        return int(res.rowcount or 0)

    async def stop_reasons(self, batch_ids: Iterable[str]) -> dict[str, StopReason | None]:
        ids = list(batch_ids)
        if not ids:
            return {}
        t = schema.batches
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(t.c.id, t.c.stop_reason).where(t.c.id.in_(ids)))
            ).all()
        return {r.id: StopReason(r.stop_reason) if r.stop_reason else None for r in rows}

    async def batch_gauges(self) -> tuple[dict[str, int], int]:
        """Read-only, for metrics: batches per status (all tenants), and request lines
        not yet finished in batches that are running (``sum(total - completed - failed)``)."""
        t = schema.batches
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.c.status, func.count()).group_by(t.c.status))).all()
            pending = (
                await conn.execute(
                    select(
                        func.coalesce(func.sum(t.c.total - t.c.completed - t.c.failed), 0)
                    ).where(t.c.phase == BatchPhase.RUN)
                )
            ).scalar()
        return {str(status): int(n) for status, n in rows}, int(pending or 0)

    async def start_batch(
        self,
        batch_id: str,
        owner: str,
        *,
        total: int,
        model: str | None,
        shards: Sequence[ShardRecord],
        now: int,
    ) -> bool:
        """Validation passed: record the shards and enter the run phase. False (and
        nothing changes) when ``owner`` no longer holds the batch's validation: its
        lease was taken over, and the new holder records the shards."""
        t, s = schema.batches, schema.shards
        async with self._write() as conn:
            moved = await conn.execute(
                update(t)
                .where(
                    t.c.id == batch_id,
                    t.c.lease_owner == owner,
                    t.c.phase == BatchPhase.VALIDATE,
                )
                .values(
                    phase=BatchPhase.RUN,
                    total=total,
                    model=model,
                    in_progress_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
            )
            if not moved.rowcount:
                return False
            if shards:
                await conn.execute(
                    insert(s),
                    [
                        {
                            "batch_id": sh.batch_id,
                            "shard_no": sh.shard_no,
                            "start_offset": sh.start_offset,
                            "end_offset": sh.end_offset,
                            "first_line": sh.first_line,
                            "last_line": sh.last_line,
                            "n_tasks": sh.n_tasks,
                            "done": False,
                        }
                        for sh in shards
                    ],
                )
            # A batch cancelled while validating stays "cancelling".
            await conn.execute(
                update(t)
                .where(t.c.id == batch_id, t.c.status == BatchStatus.VALIDATING)
                .values(status=BatchStatus.IN_PROGRESS)
            )
            await self.dialect.notify(conn)  # other workers can start on its shards now
        return True

    async def fail_batch(
        self,
        batch_id: str,
        owner: str,
        *,
        errors: list[dict[str, Any]],
        total: int,
        model: str | None,
        now: int,
    ) -> bool:
        t = schema.batches
        async with self._write() as conn:
            res = await conn.execute(
                update(t)
                .where(
                    t.c.id == batch_id, t.c.lease_owner == owner, t.c.phase == BatchPhase.VALIDATE
                )
                .values(
                    phase=BatchPhase.DONE,
                    status=BatchStatus.FAILED,
                    failed_at=now,
                    errors=errors,
                    total=total,
                    model=model,
                    lease_owner=None,
                    lease_until=None,
                )
            )
        return res.rowcount == 1

    async def set_output_ids(
        self, batch_id: str, owner: str, output_file_id: str, error_file_id: str
    ) -> None:
        """Fix the ids of the files finalization writes, so a retry reuses them."""
        t = schema.batches
        async with self._write() as conn:
            await conn.execute(
                update(t)
                .where(t.c.id == batch_id, t.c.lease_owner == owner)
                .values(output_file_id=output_file_id, error_file_id=error_file_id)
            )

    async def finish_batch(
        self,
        batch_id: str,
        owner: str,
        *,
        status: BatchStatus,
        files: Sequence[FileRecord],
        output_file_id: str | None,
        error_file_id: str | None,
        unrun: int,
        now: int,
    ) -> bool:
        """Record the output files and the final status, exactly once."""
        t = schema.batches
        async with self._write() as conn:
            res = await conn.execute(
                update(t)
                .where(
                    t.c.id == batch_id, t.c.lease_owner == owner, t.c.phase == BatchPhase.FINALIZE
                )
                .values(
                    phase=BatchPhase.DONE,
                    status=status,
                    output_file_id=output_file_id,
                    error_file_id=error_file_id,
                    failed=t.c.failed + unrun,
                    lease_owner=None,
                    lease_until=None,
                    **{_STAMP[status]: now},
                )
            )
            if not res.rowcount:
                return False
            for rec in files:
                await conn.execute(insert(schema.files).values(**_file_values(rec)))
        return True
