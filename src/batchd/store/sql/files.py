"""Files: metadata of uploaded and generated files (the bytes are in a blob store)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, exists, insert, or_, select, update

from batchd.states import ACTIVE_PHASES
from batchd.store import schema
from batchd.store.records import FileRecord, Page
from batchd.store.rows import _file, _file_values
from batchd.store.sql.core import READER_PAGE_LIMIT, SqlCore


class FileQueries(SqlCore):
    async def insert_file(self, rec: FileRecord) -> None:
        async with self._write() as conn:
            await conn.execute(insert(schema.files).values(**_file_values(rec)))

    async def get_file(self, file_id: str, *, tenant: str | None) -> FileRecord | None:
        """A live (not deleted) file; ``tenant=None`` ignores ownership."""
        reader = self.dialect.reader
        if reader is not None:
            found = reader.one("files", file_id, tenant=tenant, live_only=True)
            return _file(found) if found is not None else None
        query = select(schema.files).where(
            schema.files.c.id == file_id, schema.files.c.deleted_at.is_(None)
        )
        if tenant is not None:
            query = query.where(schema.files.c.tenant == tenant)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _file(row) if row else None

    async def list_files(
        self,
        *,
        tenant: str,
        purpose: str | None,
        after: str | None,
        limit: int,
        order: str,
    ) -> Page[FileRecord]:
        reader = self.dialect.reader
        if reader is not None and limit <= READER_PAGE_LIMIT:
            found = reader.page(
                "files", tenant=tenant, after=after, limit=limit + 1,
                descending=order == "desc",
                where=" AND deleted_at IS NULL" + (" AND purpose = ?" if purpose else ""),
                params=(purpose,) if purpose else (),
            )  # fmt: skip
            return Page([_file(r) for r in found[:limit]], has_more=len(found) > limit)
        t = schema.files
        query = select(t).where(t.c.tenant == tenant, t.c.deleted_at.is_(None))
        if purpose:
            query = query.where(t.c.purpose == purpose)
        async with self.engine.connect() as conn:
            if after:
                cursor = (
                    await conn.execute(select(t.c.seq).where(t.c.id == after, t.c.tenant == tenant))
                ).scalar()
                if cursor is not None:
                    query = query.where(t.c.seq < cursor if order == "desc" else t.c.seq > cursor)
            query = query.order_by(t.c.seq.desc() if order == "desc" else t.c.seq.asc())
            rows = (await conn.execute(query.limit(limit + 1))).all()
        return Page([_file(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def delete_file(self, file_id: str, *, tenant: str, now: int) -> bool:
        t = schema.files
        async with self._write() as conn:
            res = await conn.execute(
                update(t)
                .where(t.c.id == file_id, t.c.tenant == tenant, t.c.deleted_at.is_(None))
                .values(deleted_at=now)
            )
        return bool(res.rowcount)

    async def file_in_use(self, file_id: str) -> bool:
        """True while an unfinished batch reads this file."""
        b = schema.batches
        async with self.engine.connect() as conn:
            found = (
                await conn.execute(
                    select(b.c.id)
                    .where(b.c.input_file_id == file_id, b.c.phase.in_(ACTIVE_PHASES))
                    .limit(1)
                )
            ).first()
        return found is not None

    async def files_to_purge(self, now: int, *, limit: int = 100) -> list[FileRecord]:
        """Deleted or expired files whose bytes no running batch still needs."""
        f, b = schema.files, schema.batches
        in_use = exists().where(b.c.input_file_id == f.c.id, b.c.phase.in_(ACTIVE_PHASES))
        query = (
            select(f)
            .where(
                or_(
                    f.c.deleted_at.is_not(None),
                    and_(f.c.expires_at.is_not(None), f.c.expires_at <= now),
                ),
                ~in_use,
            )
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_file(r) for r in rows]

    async def forget_files(self, file_ids: Sequence[str]) -> None:
        if not file_ids:
            return
        async with self._write() as conn:
            await conn.execute(schema.files.delete().where(schema.files.c.id.in_(file_ids)))
