"""Uploads: large files sent in parts, published as one File on completion.

Every state move is one conditional UPDATE (``WHERE status = 'pending'``), so a
completion racing a cancel, an expiry or another completion has one winner, and a
File appears in the same transaction that marks its upload completed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, insert, select, update

from batchd.store import schema
from batchd.store.records import FileRecord
from batchd.store.rows import _file_values
from batchd.store.sql.core import SqlCore
from batchd.store.upload_records import PartRecord, UploadRecord


def _upload(m: Mapping[Any, Any]) -> UploadRecord:
    return UploadRecord(
        id=m["id"],
        tenant=m["tenant"],
        filename=m["filename"],
        purpose=m["purpose"],
        bytes=m["bytes"],
        mime_type=m["mime_type"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        status=m["status"],
        file_id=m["file_id"],
        file_expires_after=m["file_expires_after"],
        purged=bool(m["purged"]),
    )


_FIELDS = (
    "id", "tenant", "filename", "purpose", "bytes", "mime_type", "created_at",
    "expires_at", "status", "file_id", "file_expires_after", "purged",
)  # fmt: skip


class UploadQueries(SqlCore):
    async def insert_upload(self, rec: UploadRecord) -> None:
        async with self._write() as conn:
            await conn.execute(
                insert(schema.uploads).values(**{f: getattr(rec, f) for f in _FIELDS})
            )

    async def get_upload(self, upload_id: str, *, tenant: str | None) -> UploadRecord | None:
        u = schema.uploads
        query = select(u).where(u.c.id == upload_id)
        if tenant is not None:
            query = query.where(u.c.tenant == tenant)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _upload(row._mapping) if row else None

    async def add_part(
        self, part: PartRecord, *, tenant: str, now: int, max_total: int
    ) -> tuple[bool, UploadRecord | None]:
        u, p = schema.uploads, schema.upload_parts
        async with self._write() as conn:
            # Lock the upload row first (a no-op UPDATE): on PostgreSQL this serializes
            # parts of one upload against each other and against complete/cancel.
            await conn.execute(
                update(u).where(u.c.id == part.upload_id, u.c.tenant == tenant)
                .values(status=u.c.status)
            )  # fmt: skip
            row = (
                await conn.execute(select(u).where(u.c.id == part.upload_id, u.c.tenant == tenant))
            ).first()
            if row is None:
                return False, None
            rec = _upload(row._mapping)
            if rec.status != "pending" or rec.expires_at <= now:
                return False, rec
            total = (
                await conn.execute(
                    select(func.coalesce(func.sum(p.c.bytes), 0)).where(
                        p.c.upload_id == part.upload_id
                    )
                )
            ).scalar()
            if int(total or 0) + part.bytes > max_total:
                return False, rec
            await conn.execute(
                insert(p).values(
                    id=part.id, upload_id=part.upload_id, bytes=part.bytes,
                    created_at=part.created_at,
                )
            )  # fmt: skip
        return True, rec

    async def upload_parts(self, upload_id: str) -> list[PartRecord]:
        p = schema.upload_parts
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(p).where(p.c.upload_id == upload_id))).all()
        return [PartRecord(r.id, r.upload_id, r.bytes, r.created_at) for r in rows]

    async def reserve_upload_file(self, upload_id: str, file_id: str) -> str:
        u = schema.uploads
        async with self._write() as conn:
            await conn.execute(
                update(u).where(u.c.id == upload_id, u.c.file_id.is_(None)).values(file_id=file_id)
            )
            found = (await conn.execute(select(u.c.file_id).where(u.c.id == upload_id))).scalar()
        return str(found)

    async def complete_upload(self, upload_id: str, file: FileRecord, *, now: int) -> bool:
        u = schema.uploads
        async with self._write() as conn:
            res = await conn.execute(
                update(u)
                .where(
                    u.c.id == upload_id,
                    u.c.status == "pending",
                    u.c.expires_at > now,
                    u.c.file_id == file.id,
                )
                .values(status="completed")
            )
            if not res.rowcount:
                return False
            await conn.execute(insert(schema.files).values(**_file_values(file)))
        return True

    async def cancel_upload(self, upload_id: str, *, tenant: str) -> UploadRecord | None:
        u = schema.uploads
        async with self._write() as conn:
            await conn.execute(
                update(u)
                .where(u.c.id == upload_id, u.c.tenant == tenant, u.c.status == "pending")
                .values(status="cancelled")
            )
            row = (
                await conn.execute(select(u).where(u.c.id == upload_id, u.c.tenant == tenant))
            ).first()
        return _upload(row._mapping) if row else None

    async def expire_uploads(self, now: int) -> int:
        u = schema.uploads
        async with self._write() as conn:
            res = await conn.execute(
                update(u)
                .where(u.c.status == "pending", u.c.expires_at <= now)
                .values(status="expired")
            )
        return int(res.rowcount or 0)

    async def uploads_to_purge(self, *, limit: int = 100) -> list[UploadRecord]:
        u = schema.uploads
        query = (
            select(u)
            .where(u.c.purged.is_(False), u.c.status.in_(("completed", "cancelled", "expired")))
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_upload(r._mapping) for r in rows]

    async def forget_upload_parts(self, upload_id: str) -> None:
        u, p = schema.uploads, schema.upload_parts
        async with self._write() as conn:
            await conn.execute(p.delete().where(p.c.upload_id == upload_id))
            await conn.execute(update(u).where(u.c.id == upload_id).values(purged=True))
