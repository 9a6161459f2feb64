"""The worker registry: who is alive, which backends each sends to, for which tenants,
and how many slots it may hold there."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, or_, select, update

from batchd.store import schema
from batchd.store.records import BackendUse, RegistryDecision
from batchd.store.sql.core import SqlCore


class WorkerQueries(SqlCore):
    async def register_worker(
        self,
        owner: str,
        now: float,
        since: float,
        decide: RegistryDecision,
    ) -> None:
        """Record that ``owner`` is alive and what ``decide`` says of its backends, given
        the live workers as they stand: one transaction, serialized with every other
        registration (the dialect's registry lock; on SQLite the heartbeat written first
        takes the database's write lock), so no two workers decide on the same view."""
        w = schema.workers
        async with self._write() as conn:
            await self.dialect.lock_registry(conn)
            stmt = self.dialect.insert(w).values(owner=owner, heartbeat_at=now, backends={})
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=["owner"], set_={"heartbeat_at": now})
            )
            rows = (
                await conn.execute(select(w.c.owner, w.c.backends).where(w.c.heartbeat_at >= since))
            ).all()
            said = decide({r.owner: _backends(r.backends) for r in rows})
            listed = {
                name: {"keys": sorted(use["keys"]), "holds": int(use["holds"])}
                for name, use in sorted(said.items())
            }
            await conn.execute(update(w).where(w.c.owner == owner).values(backends=listed))

    async def live_workers(self, since: float) -> dict[str, dict[str, BackendUse]]:
        """Workers with a heartbeat at or after ``since``, with what each said of its
        backends (no tenants and no slots known for a row an older version wrote)."""
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


def _backends(stored: object) -> dict[str, BackendUse]:
    """A row's backends. Older versions wrote a bare list of backends, then each
    backend's tenants; neither says what it holds (0)."""
    if isinstance(stored, list):
        return {str(name): BackendUse(keys=[], holds=0) for name in stored}
    if not isinstance(stored, dict):
        return {}
    out: dict[str, BackendUse] = {}
    for name, use in stored.items():
        if isinstance(use, list):
            out[str(name)] = BackendUse(keys=[str(k) for k in use], holds=0)
            continue
        use = use if isinstance(use, dict) else {}
        keys = use.get("keys")
        out[str(name)] = BackendUse(
            keys=[str(k) for k in keys] if isinstance(keys, list) else [],
            holds=int(use.get("holds") or 0),
        )
    return out
