"""The worker registry: who is alive and which backends each sends to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import delete, or_, select

from batchd.store import schema
from batchd.store.records import BackendUse
from batchd.store.sql.core import SqlCore


class WorkerQueries(SqlCore):
    async def heartbeat_worker(
        self, owner: str, now: float, backends: Mapping[str, BackendUse]
    ) -> None:
        """Record that ``owner`` is alive, which backends it is sending to, for which
        tenants it has work there and how many slots it may hold there."""
        w = schema.workers
        listed = {
            name: {"keys": sorted(use["keys"]), "holds": int(use["holds"])}
            for name, use in sorted(backends.items())
        }
        values = {"owner": owner, "heartbeat_at": now, "backends": listed}
        async with self._write() as conn:
            stmt = self.dialect.insert(w).values(**values)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["owner"],
                    set_={"heartbeat_at": now, "backends": values["backends"]},
                )
            )

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
    if isinstance(stored, list):  # a bare list of backends (an older version)
        return {str(name): BackendUse(keys=[], holds=0) for name in stored}
    if not isinstance(stored, dict):
        return {}
    out: dict[str, BackendUse] = {}
    for name, use in stored.items():
        use = use if isinstance(use, dict) else {}
        keys = use.get("keys")
        out[str(name)] = BackendUse(
            keys=[str(k) for k in keys] if isinstance(keys, list) else [],
            holds=int(use.get("holds") or 0),
        )
    return out
