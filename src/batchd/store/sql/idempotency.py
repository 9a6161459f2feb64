"""Idempotency keys: the primary key ``(tenant, key)`` admits one request per key."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_, select, update

from batchd.store import schema
from batchd.store.sql.core import SqlCore
from batchd.store.upload_records import IdempotencyRecord


class IdempotencyQueries(SqlCore):
    async def claim_idempotency_key(
        self, rec: IdempotencyRecord, *, stale_before: int
    ) -> IdempotencyRecord | None:
        k = schema.idempotency_keys
        async with self._write() as conn:
            # An expired row, or the claim of a request that died, is as good as none:
            # drop it, then race for the key.
            await conn.execute(
                k.delete().where(
                    k.c.tenant == rec.tenant,
                    k.c.key == rec.key,
                    or_(
                        k.c.expires_at <= rec.created_at,
                        and_(k.c.object_id.is_(None), k.c.created_at < stale_before),
                    ),
                )
            )
            res = await conn.execute(
                self.dialect.insert(k)
                .values(
                    tenant=rec.tenant, key=rec.key, kind=rec.kind, fingerprint=rec.fingerprint,
                    created_at=rec.created_at, expires_at=rec.expires_at,
                )
                .on_conflict_do_nothing(index_elements=["tenant", "key"])
            )  # fmt: skip
            if res.rowcount:
                return None
            row = (
                await conn.execute(select(k).where(k.c.tenant == rec.tenant, k.c.key == rec.key))
            ).first()
        if row is None:  # released between our insert and read: the caller retries
            return IdempotencyRecord(rec.tenant, rec.key, "", "", 0, 0)
        m = row._mapping
        return IdempotencyRecord(
            tenant=m["tenant"], key=m["key"], kind=m["kind"], fingerprint=m["fingerprint"],
            created_at=m["created_at"], expires_at=m["expires_at"], object_id=m["object_id"],
            response=m["response"],
        )  # fmt: skip

    async def finish_idempotency_key(
        self, tenant: str, key: str, *, object_id: str, response: dict[str, Any]
    ) -> None:
        k = schema.idempotency_keys
        async with self._write() as conn:
            await conn.execute(
                update(k)
                .where(k.c.tenant == tenant, k.c.key == key)
                .values(object_id=object_id, response=response)
            )

    async def release_idempotency_key(self, tenant: str, key: str) -> None:
        k = schema.idempotency_keys
        async with self._write() as conn:
            await conn.execute(
                k.delete().where(k.c.tenant == tenant, k.c.key == key, k.c.object_id.is_(None))
            )

    async def purge_idempotency_keys(self, now: int) -> int:
        k = schema.idempotency_keys
        async with self._write() as conn:
            res = await conn.execute(k.delete().where(k.c.expires_at <= now))
        return int(res.rowcount or 0)
