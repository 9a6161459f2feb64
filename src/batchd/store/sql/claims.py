"""Claims: leases on batches (validate, finalize) and shards (run).

Work is claimed under leases (``lease_owner``/``lease_until``) with a conditional
UPDATE, so two processes can never both hold a claim; an expired lease may be
taken over by anyone. The candidate row is picked through the dialect's
``skip_locked`` (PostgreSQL: ``FOR UPDATE SKIP LOCKED``), so workers racing for
work each get a different row instead of queueing on one. Moving a claimed row on
(releasing, completing) checks the owner: a worker whose lease was taken over
cannot undo the new holder's work.

Which shard runs next is chosen fairly between tenants (store/fair_order.py): the
candidates are few (batches in their run phase), so the choice is made in Python
over two small reads, and only the chosen shard's row is locked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import and_, exists, or_, select, update

from batchd.states import BatchPhase, BatchStatus
from batchd.store import schema
from batchd.store.fair_order import Running, WeightOf, claim_order
from batchd.store.records import BatchRecord, ShardRecord
from batchd.store.rows import _batch, _shard
from batchd.store.sql.core import SqlCore


class ClaimQueries(SqlCore):
    async def claim_validation(self, owner: str, now: float, until: float) -> BatchRecord | None:
        t = schema.batches
        validating = t.c.phase == BatchPhase.VALIDATE
        return await self._claim_batch(
            self.dialect.skip_locked(
                select(t.c.id)
                .where(validating, _free(t, now))
                .order_by(t.c.priority.desc(), t.c.seq)
                .limit(1)
            ),
            validating,
            owner,
            now,
            until,
            {},
        )

    async def claim_finalization(self, owner: str, now: float, until: float) -> BatchRecord | None:
        """A batch ready to finalize: all shards done, or stopped with no shard in flight."""
        t, s = schema.batches, schema.shards
        open_shard = exists().where(s.c.batch_id == t.c.id, s.c.done.is_(False))
        busy_shard = exists().where(
            s.c.batch_id == t.c.id, s.c.done.is_(False), s.c.lease_until >= now
        )
        running = t.c.phase == BatchPhase.RUN
        ready = or_(
            and_(running, t.c.stop_reason.is_(None), ~open_shard),
            and_(running, t.c.stop_reason.is_not(None), ~busy_shard),
            t.c.phase == BatchPhase.FINALIZE,
        )
        batch = await self._claim_batch(
            self.dialect.skip_locked(
                select(t.c.id)
                .where(_free(t, now), ready)
                .order_by(t.c.priority.desc(), t.c.seq)
                .limit(1)
            ),
            ready,
            owner,
            now,
            until,
            {"phase": BatchPhase.FINALIZE},
        )
        if (
            batch is not None
            and batch.stop_reason is None
            and batch.status == BatchStatus.IN_PROGRESS
        ):
            # Only a batch finishing normally shows "finalizing" (as OpenAI's do).
            async with self._write() as conn:
                await conn.execute(
                    update(t)
                    .where(t.c.id == batch.id)
                    .values(status=BatchStatus.FINALIZING, finalizing_at=int(now))
                )
            batch.status, batch.finalizing_at = BatchStatus.FINALIZING, int(now)
        return batch

    async def _claim_batch(
        self,
        candidate: Any,
        still: Any,
        owner: str,
        now: float,
        until: float,
        values: dict[str, Any],
    ) -> BatchRecord | None:
        """Lease the batch ``candidate`` selects if it is free and ``still`` holds.

        The update checks both again: with several processes on one SQLite file the
        select and the update are not one snapshot (the select runs before the write
        transaction begins), so another worker may have claimed the batch and moved it
        on (validated it, say) in between. Leasing it anyway held a batch in its run
        phase that nobody would then finalize."""
        t = schema.batches
        async with self._write() as conn:
            batch_id = (await conn.execute(candidate)).scalar()
            if batch_id is None:
                return None
            res = await conn.execute(
                update(t)
                .where(t.c.id == batch_id, _free(t, now), still)
                .values(lease_owner=owner, lease_until=until, **values)
            )
            if not res.rowcount:
                return None
            row = (await conn.execute(select(t).where(t.c.id == batch_id))).one()
        return _batch(row)

    async def claim_shard(
        self,
        owner: str,
        now: float,
        until: float,
        *,
        newcomers_only: bool = False,
        new_tenants_only: bool = False,
        weight_of: WeightOf | None = None,
        can_run: Callable[[str | None], bool] | None = None,
    ) -> ShardRecord | None:
        """The next shard to run, fairly between tenants (see :func:`claim_order`).

        ``newcomers_only``: only from a batch with no shard running anywhere or a
        tenant with no shard running on ``owner``, so a worker at capacity can still
        start a newly arrived batch, and give a key with work elsewhere a share here.
        ``new_tenants_only``: only from a tenant with no shard running on ``owner``, so
        one key's many new batches cannot take every place a worker has.
        ``can_run(model)``: only from batches of a model this worker may send to.
        """
        s, b = schema.shards, schema.batches
        free = or_(s.c.lease_until.is_(None), s.c.lease_until < now)
        async with self._write() as conn:
            # Both reads are small: shards running right now (bounded by workers x
            # shards each) and the batches in their run phase with a shard to give.
            held = await conn.execute(
                select(s.c.batch_id, b.c.tenant, s.c.lease_owner)
                .join(b, b.c.id == s.c.batch_id)
                .where(s.c.done.is_(False), s.c.lease_until >= now)
            )
            running = Running.of(held.all(), owner)
            waiting = await conn.execute(
                select(b.c.id, b.c.tenant, b.c.priority, b.c.seq, b.c.model).where(
                    b.c.phase == BatchPhase.RUN,
                    b.c.stop_reason.is_(None),
                    exists().where(s.c.batch_id == b.c.id, s.c.done.is_(False), free),
                )
            )
            candidates = [
                (batch_id, tenant, priority, seq)
                for batch_id, tenant, priority, seq, model in waiting.all()
                if can_run is None or can_run(model)
            ]
            for batch_id, tenant in claim_order(candidates, running, weight_of):
                if newcomers_only and running.batches[batch_id] and tenant in running.mine:
                    continue
                if new_tenants_only and tenant in running.mine:
                    continue
                shard_no = (
                    await conn.execute(
                        self.dialect.skip_locked(
                            select(s.c.shard_no)
                            .where(s.c.batch_id == batch_id, s.c.done.is_(False), free)
                            .order_by(s.c.shard_no)
                            .limit(1),
                            s,
                        )
                    )
                ).scalar()
                if shard_no is None:
                    continue  # another worker is taking this batch's last free shards
                res = await conn.execute(
                    # Not done, again: another process may have run it meanwhile (see
                    # _claim_batch).
                    update(s)
                    .where(
                        s.c.batch_id == batch_id,
                        s.c.shard_no == shard_no,
                        s.c.done.is_(False),
                        free,
                    )
                    .values(lease_owner=owner, lease_until=until)
                )
                if not res.rowcount:
                    continue
                row = (
                    await conn.execute(
                        select(s).where(s.c.batch_id == batch_id, s.c.shard_no == shard_no)
                    )
                ).one()
                return _shard(row)
        return None

    async def release_shard(self, shard: ShardRecord, owner: str) -> bool:
        """Give the shard back unfinished; False if ``owner`` no longer held it."""
        return await self._move_shard(shard, owner, done=False)

    async def complete_shard(self, shard: ShardRecord, owner: str) -> bool:
        """Mark the shard done; False (and nothing changes) if ``owner`` no longer held
        it: its lease was taken over, and the new holder finishes the shard."""
        return await self._move_shard(shard, owner, done=True)

    async def _move_shard(self, shard: ShardRecord, owner: str, *, done: bool) -> bool:
        s = schema.shards
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        if done:
            values["done"] = True
        async with self._write() as conn:
            res = await conn.execute(
                update(s)
                .where(
                    s.c.batch_id == shard.batch_id,
                    s.c.shard_no == shard.shard_no,
                    s.c.lease_owner == owner,
                )
                .values(**values)
            )
        return bool(res.rowcount)

    async def renew_leases(self, owner: str, until: float) -> None:
        async with self._write() as conn:
            for table in (schema.shards, schema.batches):
                await conn.execute(
                    update(table).where(table.c.lease_owner == owner).values(lease_until=until)
                )

    async def lease_owners(self, now: float) -> set[str]:
        """Owners holding a live lease on anything."""
        owners: set[str] = set()
        async with self.engine.connect() as conn:
            for table in (schema.shards, schema.batches):
                rows = await conn.execute(
                    select(table.c.lease_owner)
                    .where(table.c.lease_owner.is_not(None), table.c.lease_until >= now)
                    .distinct()
                )
                owners.update(r[0] for r in rows)
        return owners

    async def release_leases(self, owners: Sequence[str]) -> None:
        """Free every claim of owners known to be dead, so work resumes at once."""
        if not owners:
            return
        async with self._write() as conn:
            for table in (schema.shards, schema.batches):
                await conn.execute(
                    update(table)
                    .where(table.c.lease_owner.in_(list(owners)))
                    .values(lease_owner=None, lease_until=None)
                )


def _free(table: Any, now: float) -> Any:
    """No live lease on the row."""
    return or_(table.c.lease_until.is_(None), table.c.lease_until < now)
