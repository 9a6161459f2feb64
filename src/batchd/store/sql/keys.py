"""API keys (``batchd keys``) and usage per tenant.

Usage is summed from the batches themselves (their counters are bumped as results are
recorded), so it needs no counter of its own and cannot drift from what the batches say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from batchd.store import schema
from batchd.store.key_records import ApiKeyRecord, TenantUsage
from batchd.store.rows import RowLike
from batchd.store.sql.core import SqlCore


class KeyQueries(SqlCore):
    async def insert_api_key(self, rec: ApiKeyRecord) -> bool:
        """False (and nothing written) when a key of that name already exists."""
        try:
            async with self._write() as conn:
                await conn.execute(
                    schema.api_keys.insert().values(
                        name=rec.name, digest=rec.digest, tenant=rec.tenant,
                        created_at=rec.created_at, revoked_at=rec.revoked_at,
                        max_enqueued_tokens=rec.max_enqueued_tokens,
                        max_enqueued_requests=rec.max_enqueued_requests, weight=rec.weight,
                    )
                )  # fmt: skip
        except IntegrityError:
            return False
        return True

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, revoked ones too, oldest first."""
        k = schema.api_keys
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(k).order_by(k.c.created_at, k.c.name))
            return [_key(row) for row in rows]

    async def revoke_api_key(self, name: str, *, now: int) -> ApiKeyRecord | None:
        """Revoke the key (a revoked one stays as it was); None if there is no such key."""
        k = schema.api_keys
        async with self._write() as conn:
            await conn.execute(
                update(k).where(k.c.name == name, k.c.revoked_at.is_(None)).values(revoked_at=now)
            )
            row = (await conn.execute(select(k).where(k.c.name == name))).first()
        return None if row is None else _key(row)

    async def note_key_use(self, last_used: Mapping[str, int]) -> None:
        """Record when keys (by digest) were last used; never moves a time back."""
        if not last_used:
            return
        k = schema.api_keys
        async with self._write() as conn:
            for digest, at in last_used.items():
                await conn.execute(
                    update(k)
                    .where(
                        k.c.digest == digest,
                        (k.c.last_used_at.is_(None)) | (k.c.last_used_at < at),
                    )
                    .values(last_used_at=at)
                )

    async def usage_by_tenant(self, tenant: str | None = None) -> dict[str, TenantUsage]:
        b = schema.batches
        query = select(
            b.c.tenant,
            func.count(),
            func.coalesce(func.sum(b.c.completed), 0),
            func.coalesce(func.sum(b.c.failed), 0),
            func.coalesce(func.sum(b.c.input_tokens), 0),
            func.coalesce(func.sum(b.c.output_tokens), 0),
        ).group_by(b.c.tenant)
        if tenant is not None:
            query = query.where(b.c.tenant == tenant)  # ix_batches_tenant_seq
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
            return {
                row[0]: TenantUsage(
                    batches=int(row[1]),
                    requests=int(row[2]) + int(row[3]),
                    completed=int(row[2]),
                    failed=int(row[3]),
                    input_tokens=int(row[4]),
                    output_tokens=int(row[5]),
                )
                for row in rows
            }


def _key(row: RowLike) -> ApiKeyRecord:
    m: Mapping[str, Any] = row._mapping

    def opt_int(name: str) -> int | None:
        value = m[name]
        return None if value is None else int(value)

    return ApiKeyRecord(
        name=str(m["name"]),
        digest=str(m["digest"]),
        tenant=str(m["tenant"]),
        created_at=int(m["created_at"]),
        revoked_at=opt_int("revoked_at"),
        last_used_at=opt_int("last_used_at"),
        max_enqueued_tokens=opt_int("max_enqueued_tokens"),
        max_enqueued_requests=opt_int("max_enqueued_requests"),
        weight=float(m["weight"]),
    )
