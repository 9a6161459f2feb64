"""The worker registry: who is alive and which backends each sends to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import delete, or_, select

from batchd.store import schema
from batchd.store.sql.core import SqlCore


class WorkerQueries(SqlCore):
    async def heartbeat_worker(
        self, owner: str, now: float, backends: Mapping[str, Sequence[str]]
    ) -> None:
        """Record that ``owner`` is alive, which backends it is sending to, and for which
        tenants it has work there."""
        w = schema.workers
        listed = {name: sorted(tenants) for name, tenants in sorted(backends.items())}
        values = {"owner": owner, "heartbeat_at": now, "backends": listed}
        async with self._write() as conn:
            stmt = self.dialect.insert(w).values(**values)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["owner"],
                    set_={"heartbeat_at": now, "backends": values["backends"]},
                )
            )

    async def live_workers(self, since: float) -> dict[str, dict[str, list[str]]]:
        """Workers with a heartbeat at or after ``since``, with their backends and the
        tenants each has work for there (none known for a row an older version wrote)."""
        w = schema.workers
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(w.c.owner, w.c.backends).where(w.c.heartbeat_at >= since))
            ).all()
        return {r.owner: _backends(r.backends) for r in rows}

    async def forget_workers(self, *, owners: Sequence[str] = (), before: float = 0.0) -> None:
        """Drop the named workers and every worker silent since ``before``."""
        w = schema.workers
        async with self._write() as conn:
            await conn.execute(
                delete(w).where(or_(w.c.owner.in_(list(owners)), w.c.heartbeat_at < before))
            )


def _backends(stored: object) -> dict[str, list[str]]:
    if isinstance(stored, dict):
        return {str(name): list(tenants or []) for name, tenants in stored.items()}
    if isinstance(stored, list):  # a bare list of backends
        return {str(name): [] for name in stored}
    return {}
