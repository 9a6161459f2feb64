"""The worker registry: who is alive and which backends each sends to."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, or_, select

from batchd.store import schema
from batchd.store.sql.core import SqlCore


class WorkerQueries(SqlCore):
    async def heartbeat_worker(self, owner: str, now: float, backends: Sequence[str]) -> None:
        """Record that ``owner`` is alive and which backends it is sending to."""
        w = schema.workers
        values = {"owner": owner, "heartbeat_at": now, "backends": sorted(backends)}
        async with self._write() as conn:
            stmt = self.dialect.insert(w).values(**values)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["owner"],
                    set_={"heartbeat_at": now, "backends": values["backends"]},
                )
            )

    async def live_workers(self, since: float) -> dict[str, list[str]]:
        """Workers with a heartbeat at or after ``since``, with their backends."""
        w = schema.workers
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(w.c.owner, w.c.backends).where(w.c.heartbeat_at >= since))
            ).all()
        return {r.owner: list(r.backends or []) for r in rows}

    async def forget_workers(self, *, owners: Sequence[str] = (), before: float = 0.0) -> None:
        """Drop the named workers and every worker silent since ``before``."""
        w = schema.workers
        async with self._write() as conn:
            await conn.execute(
                delete(w).where(or_(w.c.owner.in_(list(owners)), w.c.heartbeat_at < before))
            )
