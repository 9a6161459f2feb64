"""Queue limits: what a tenant's unfinished batches hold, checked at admission.

Admission locks the tenant's ``tenant_queues`` row (an upsert that bumps a counter)
before it sums, so on PostgreSQL two batches of one tenant admitted at once queue
on that row lock and the second sees the first's counts (READ COMMITTED takes a new
snapshot per statement); SQLite has one writer at a time anyway.
"""

from __future__ import annotations

from sqlalchemy import func, select, update

from batchd.states import ACTIVE_PHASES
from batchd.store import schema
from batchd.store.sql.core import SqlCore


class QueueQueries(SqlCore):
    async def admit_batch(
        self,
        batch_id: str,
        owner: str,
        *,
        tenant: str,
        tokens: int,
        requests: int,
        max_tokens: int | None,
        max_requests: int | None,
    ) -> tuple[str, int] | None:
        b, q = schema.batches, schema.tenant_queues
        async with self._write() as conn:
            stmt = self.dialect.insert(q).values(tenant=tenant, admissions=1)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["tenant"], set_={"admissions": q.c.admissions + 1}
                )
            )
            held = (
                await conn.execute(
                    select(
                        func.coalesce(func.sum(b.c.enqueued_tokens), 0),
                        func.coalesce(func.sum(b.c.enqueued_requests), 0),
                    ).where(b.c.tenant == tenant, b.c.phase.in_(ACTIVE_PHASES), b.c.id != batch_id)
                )
            ).one()
            held_tokens, held_requests = int(held[0]), int(held[1])
            if max_tokens is not None and held_tokens + tokens > max_tokens:
                return "tokens", max_tokens
            if max_requests is not None and held_requests + requests > max_requests:
                return "requests", max_requests
            await conn.execute(
                update(b)
                .where(b.c.id == batch_id, b.c.lease_owner == owner)
                .values(enqueued_tokens=tokens, enqueued_requests=requests)
            )
        return None
