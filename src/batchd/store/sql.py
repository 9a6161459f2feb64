"""The SQL store: SQLite by default, PostgreSQL for many processes on many hosts.

Every method is one short transaction. Work is claimed under leases
(``lease_owner``/``lease_until``) with a conditional UPDATE, so two processes can
never both hold a claim; an expired lease may be taken over by anyone. On
PostgreSQL the candidate row is picked with ``FOR UPDATE SKIP LOCKED``, so
workers racing for work each get a different row instead of queueing on one.

SQLite allows one writer at a time; rather than let concurrent writers spin on
``SQLITE_BUSY`` we serialise this process's writes behind one asyncio lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import and_, delete, event, exists, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from batchd.store import schema
from batchd.store.migrate import upgrade
from batchd.store.notify import CHANNEL, WorkListener
from batchd.store.records import (
    BatchRecord,
    FileRecord,
    Page,
    ResultRow,
    ShardRecord,
    Usage,
    priority_of,
)
from batchd.store.rows import _batch, _batch_values, _file, _file_values, _shard
from batchd.store.sqlite_reads import SqliteReader
from batchd.store.sqlite_results import SqliteResultWriter

# Pages up to this size are read on the event loop (see store/sqlite_reads.py);
# larger ones go through the async engine so one request cannot stall the loop.
READER_PAGE_LIMIT = 1000
ACTIVE_PHASES = ("validate", "run", "finalize")
_RESULT_PAGE = 500


def async_url(url: str) -> str:
    """The SQLAlchemy async URL for a plain one: ``postgresql://`` (or ``postgres://``)
    uses asyncpg, ``sqlite://`` aiosqlite; URLs naming a driver are kept."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    driver = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
    driver["sqlite"] = "sqlite+aiosqlite"
    return f"{driver.get(scheme, scheme)}://{rest}"


class SqlStore:
    """Metadata of files and batches, shards, and per-line results."""

    def __init__(
        self, url: str, *, sqlite_synchronous: str = "NORMAL", pool_size: int = 10
    ) -> None:
        url = async_url(url)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgres = url.startswith("postgresql")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        elif self.is_postgres:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            sync_mode = sqlite_synchronous.upper()

            @event.listens_for(self.engine.sync_engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={sync_mode}")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

        self._write_lock = _AsyncLock() if self.is_sqlite else None
        self._fast_results: SqliteResultWriter | None = None
        self._reader: SqliteReader | None = None
        if self.is_sqlite:
            path = self.engine.url.database
            if path and path != ":memory:":
                self._fast_results = SqliteResultWriter(path, synchronous=sqlite_synchronous)
                self._reader = SqliteReader(path)

    async def open(self) -> None:
        """Bring the database to the current schema (versioned migrations)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(upgrade)

    def listener(self, callback: Callable[[], None]) -> WorkListener | None:
        """Calls ``callback`` when another process creates work (PostgreSQL only)."""
        if not self.is_postgres:
            return None
        dsn = make_url(self.url).set(drivername="postgresql")
        return WorkListener(dsn.render_as_string(hide_password=False), callback)

    async def _notify(self, conn: AsyncConnection) -> None:
        if self.is_postgres:
            await conn.execute(text(f"NOTIFY {CHANNEL}"))

    def _skip_locked(self, query: Any, *of: Any) -> Any:
        # SQLite has one writer at a time anyway (and no FOR UPDATE).
        if self.is_postgres:
            return query.with_for_update(skip_locked=True, of=list(of) or None)
        return query

    async def close(self) -> None:
        if self._fast_results is not None:
            self._fast_results.close()
        if self._reader is not None:
            self._reader.close()
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    def _insert(self, table: Any) -> Any:
        if self.is_sqlite:
            return sqlite_insert(table)
        return pg_insert(table)

    # ----------------------------------------------------------------- files

    async def insert_file(self, rec: FileRecord) -> None:
        async with self._write() as conn:
            await conn.execute(insert(schema.files).values(**_file_values(rec)))

    async def get_file(self, file_id: str, *, tenant: str | None) -> FileRecord | None:
        """A live (not deleted) file; ``tenant=None`` ignores ownership."""
        if self._reader is not None:
            found = self._reader.one("files", file_id, tenant=tenant, live_only=True)
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
        if self._reader is not None and limit <= READER_PAGE_LIMIT:
            found = self._reader.page(
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

    # --------------------------------------------------------------- batches

    async def insert_batch(self, rec: BatchRecord) -> None:
        async with self._write() as conn:
            values = _batch_values(rec)
            values["priority"] = rec.priority or priority_of(rec.metadata)
            await conn.execute(insert(schema.batches).values(**values))
            await self._notify(conn)

    async def get_batch(self, batch_id: str, *, tenant: str | None) -> BatchRecord | None:
        if self._reader is not None:
            found = self._reader.one("batches", batch_id, tenant=tenant)
            return _batch(found) if found is not None else None
        query = select(schema.batches).where(schema.batches.c.id == batch_id)
        if tenant is not None:
            query = query.where(schema.batches.c.tenant == tenant)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _batch(row) if row else None

    async def list_batches(
        self, *, tenant: str, after: str | None, limit: int
    ) -> Page[BatchRecord]:
        if self._reader is not None and limit <= READER_PAGE_LIMIT:
            found = self._reader.page("batches", tenant=tenant, after=after, limit=limit + 1)
            return Page([_batch(r) for r in found[:limit]], has_more=len(found) > limit)
        t = schema.batches
        query = select(t).where(t.c.tenant == tenant)
        async with self.engine.connect() as conn:
            if after:
                cursor = (
                    await conn.execute(select(t.c.seq).where(t.c.id == after, t.c.tenant == tenant))
                ).scalar()
                if cursor is not None:
                    query = query.where(t.c.seq < cursor)
            rows = (await conn.execute(query.order_by(t.c.seq.desc()).limit(limit + 1))).all()
        return Page([_batch(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def request_cancel(self, batch_id: str, *, tenant: str, now: int) -> BatchRecord | None:
        """Move a running batch to ``cancelling``; a finished one is returned unchanged."""
        t = schema.batches
        async with self._write() as conn:
            await conn.execute(
                update(t)
                .where(
                    t.c.id == batch_id,
                    t.c.tenant == tenant,
                    t.c.status.in_(("validating", "in_progress")),
                )
                .values(status="cancelling", cancelling_at=now, stop_reason="cancel")
            )
            await self._notify(conn)
            row = (
                await conn.execute(select(t).where(t.c.id == batch_id, t.c.tenant == tenant))
            ).first()
        return _batch(row) if row else None

    async def request_expiry(self, now: int) -> int:
        """Flag every running batch whose window has passed; returns how many."""
        t = schema.batches
        async with self._write() as conn:
            res = await conn.execute(
                update(t)
                .where(
                    t.c.phase.in_(("validate", "run")),
                    t.c.stop_reason.is_(None),
                    t.c.expires_at <= now,
                )
                .values(stop_reason="expire")
            )
        return int(res.rowcount or 0)

    async def stop_reasons(self, batch_ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(batch_ids)
        if not ids:
            return {}
        t = schema.batches
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(t.c.id, t.c.stop_reason).where(t.c.id.in_(ids)))
            ).all()
        return {r.id: r.stop_reason for r in rows}

    async def batch_gauges(self) -> tuple[dict[str, int], int]:
        """Read-only, for metrics: batches per status (all tenants), and request lines
        not yet finished in batches that are running (``sum(total - completed - failed)``)."""
        t = schema.batches
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.c.status, func.count()).group_by(t.c.status))).all()
            pending = (
                await conn.execute(
                    select(
                        func.coalesce(func.sum(t.c.total - t.c.completed - t.c.failed), 0)
                    ).where(t.c.phase == "run")
                )
            ).scalar()
        return {str(status): int(n) for status, n in rows}, int(pending or 0)

    # ---------------------------------------------------------- worker: claims

    async def claim_validation(self, owner: str, now: float, until: float) -> BatchRecord | None:
        t = schema.batches
        free = or_(t.c.lease_until.is_(None), t.c.lease_until < now)
        return await self._claim_batch(
            self._skip_locked(
                select(t.c.id)
                .where(t.c.phase == "validate", free)
                .order_by(t.c.priority.desc(), t.c.seq)
                .limit(1)
            ),
            owner,
            now,
            until,
            {},
        )

    async def claim_finalization(self, owner: str, now: float, until: float) -> BatchRecord | None:
        """A batch ready to finalize: all shards done, or stopped with no shard in flight."""
        t, s = schema.batches, schema.shards
        free = or_(t.c.lease_until.is_(None), t.c.lease_until < now)
        open_shard = exists().where(s.c.batch_id == t.c.id, s.c.done.is_(False))
        busy_shard = exists().where(
            s.c.batch_id == t.c.id, s.c.done.is_(False), s.c.lease_until >= now
        )
        ready = or_(
            and_(t.c.phase == "run", t.c.stop_reason.is_(None), ~open_shard),
            and_(t.c.phase == "run", t.c.stop_reason.is_not(None), ~busy_shard),
            t.c.phase == "finalize",
        )
        batch = await self._claim_batch(
            self._skip_locked(
                select(t.c.id).where(free, ready).order_by(t.c.priority.desc(), t.c.seq).limit(1)
            ),
            owner,
            now,
            until,
            {"phase": "finalize"},
        )
        if batch is not None and batch.stop_reason is None and batch.status == "in_progress":
            # Only a batch finishing normally shows "finalizing" (as OpenAI's do).
            async with self._write() as conn:
                await conn.execute(
                    update(t)
                    .where(t.c.id == batch.id)
                    .values(status="finalizing", finalizing_at=int(now))
                )
            batch.status, batch.finalizing_at = "finalizing", int(now)
        return batch

    async def _claim_batch(
        self, candidate: Any, owner: str, now: float, until: float, values: dict[str, Any]
    ) -> BatchRecord | None:
        t = schema.batches
        async with self._write() as conn:
            batch_id = (await conn.execute(candidate)).scalar()
            if batch_id is None:
                return None
            res = await conn.execute(
                update(t)
                .where(
                    t.c.id == batch_id,
                    or_(t.c.lease_until.is_(None), t.c.lease_until < now),
                )
                .values(lease_owner=owner, lease_until=until, **values)
            )
            if not res.rowcount:
                return None
            row = (await conn.execute(select(t).where(t.c.id == batch_id))).one()
        return _batch(row)

    async def claim_shard(
        self, owner: str, now: float, until: float, *, idle_batches_only: bool = False
    ) -> ShardRecord | None:
        """The next shard to run: from the highest priority, then from the batch with
        the fewest shards running (anywhere), then the oldest batch.

        ``idle_batches_only``: only from a batch with no shard running at all, so a
        worker at capacity can still start a newly arrived batch.
        """
        s, b = schema.shards, schema.batches
        s2 = s.alias("s2")
        running = (
            select(func.count())
            .where(s2.c.batch_id == s.c.batch_id, s2.c.done.is_(False), s2.c.lease_until >= now)
            .scalar_subquery()
        )
        free = or_(s.c.lease_until.is_(None), s.c.lease_until < now)
        candidate = (
            select(s.c.batch_id, s.c.shard_no)
            .join(b, b.c.id == s.c.batch_id)
            .where(s.c.done.is_(False), free, b.c.phase == "run", b.c.stop_reason.is_(None))
            .order_by(b.c.priority.desc(), running, b.c.seq, s.c.shard_no)
            .limit(1)
        )
        if idle_batches_only:
            candidate = candidate.where(running == 0)
        candidate = self._skip_locked(candidate, s)
        async with self._write() as conn:
            key = (await conn.execute(candidate)).first()
            if key is None:
                return None
            res = await conn.execute(
                update(s)
                .where(s.c.batch_id == key.batch_id, s.c.shard_no == key.shard_no, free)
                .values(lease_owner=owner, lease_until=until)
            )
            if not res.rowcount:
                return None
            row = (
                await conn.execute(
                    select(s).where(s.c.batch_id == key.batch_id, s.c.shard_no == key.shard_no)
                )
            ).one()
        return _shard(row)

    async def release_shard(self, shard: ShardRecord, owner: str) -> None:
        s = schema.shards
        async with self._write() as conn:
            await conn.execute(
                update(s)
                .where(
                    s.c.batch_id == shard.batch_id,
                    s.c.shard_no == shard.shard_no,
                    s.c.lease_owner == owner,
                )
                .values(lease_owner=None, lease_until=None)
            )

    async def complete_shard(self, shard: ShardRecord, owner: str) -> None:
        s = schema.shards
        async with self._write() as conn:
            await conn.execute(
                update(s)
                .where(s.c.batch_id == shard.batch_id, s.c.shard_no == shard.shard_no)
                .values(done=True, lease_owner=None, lease_until=None)
            )

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

    # ------------------------------------------------------- worker: progress

    async def start_batch(
        self,
        batch_id: str,
        owner: str,
        *,
        total: int,
        model: str | None,
        shards: Sequence[ShardRecord],
        now: int,
    ) -> None:
        """Validation passed: record the shards and enter the run phase."""
        t, s = schema.batches, schema.shards
        async with self._write() as conn:
            if shards:
                await conn.execute(
                    insert(s),
                    [
                        {
                            "batch_id": sh.batch_id,
                            "shard_no": sh.shard_no,
                            "start_offset": sh.start_offset,
                            "end_offset": sh.end_offset,
                            "first_line": sh.first_line,
                            "last_line": sh.last_line,
                            "n_tasks": sh.n_tasks,
                            "done": False,
                        }
                        for sh in shards
                    ],
                )
            await conn.execute(
                update(t)
                .where(t.c.id == batch_id, t.c.lease_owner == owner)
                .values(
                    phase="run",
                    total=total,
                    model=model,
                    in_progress_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
            )
            # A batch cancelled while validating stays "cancelling".
            await conn.execute(
                update(t)
                .where(t.c.id == batch_id, t.c.status == "validating")
                .values(status="in_progress")
            )
            await self._notify(conn)  # other workers can start on its shards now

    async def fail_batch(
        self,
        batch_id: str,
        owner: str,
        *,
        errors: list[dict[str, Any]],
        total: int,
        model: str | None,
        now: int,
    ) -> None:
        t = schema.batches
        async with self._write() as conn:
            await conn.execute(
                update(t)
                .where(t.c.id == batch_id, t.c.lease_owner == owner)
                .values(
                    phase="done",
                    status="failed",
                    failed_at=now,
                    errors=errors,
                    total=total,
                    model=model,
                    lease_owner=None,
                    lease_until=None,
                )
            )

    async def done_lines(self, batch_id: str, first_line: int, last_line: int) -> set[int]:
        r = schema.results
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(r.c.line_no).where(
                    r.c.batch_id == batch_id, r.c.line_no.between(first_line, last_line)
                )
            )
            return {row[0] for row in rows}

    async def record_results(self, rows: Sequence[ResultRow]) -> int:
        """Store outcomes and bump the batches' counters, in one transaction.

        A line that already has a result keeps it (a re-sent request after a
        takeover must not be counted twice); returns how many rows were new.
        """
        if not rows:
            return 0
        if self._fast_results is not None:
            async with self._write_lock or contextlib.nullcontext():
                return await self._fast_results.record(rows)
        r, t = schema.results, schema.batches
        by_key = {(row.batch_id, row.line_no): row for row in rows}
        async with self._write() as conn:
            running = set(
                (
                    await conn.execute(
                        select(t.c.id).where(t.c.phase == "run", t.c.id.in_({b for b, _ in by_key}))
                    )
                ).scalars()
            )
            # Once finalization has begun a late result must not count.
            params = [
                {
                    "batch_id": row.batch_id,
                    "line_no": row.line_no,
                    "custom_id": row.custom_id,
                    "ok": row.ok,
                    "data": row.data,
                }
                for row in by_key.values()
                if row.batch_id in running
            ]
            if not params:
                return 0
            stmt = (
                self._insert(r)
                .on_conflict_do_nothing(index_elements=["batch_id", "line_no"])
                .returning(r.c.batch_id, r.c.line_no)
            )
            inserted = (await conn.execute(stmt, params)).all()
            totals: dict[str, tuple[int, int, Usage]] = {}
            for batch_id, line_no in inserted:
                row = by_key[(batch_id, line_no)]
                ok_n, fail_n, usage = totals.get(batch_id, (0, 0, Usage()))
                if row.usage:
                    usage.add(row.usage)
                totals[batch_id] = (ok_n + row.ok, fail_n + (not row.ok), usage)
            for batch_id, (ok_n, fail_n, usage) in totals.items():
                await conn.execute(
                    update(t)
                    .where(t.c.id == batch_id)
                    .values(
                        completed=t.c.completed + ok_n,
                        failed=t.c.failed + fail_n,
                        input_tokens=t.c.input_tokens + usage.input_tokens,
                        cached_tokens=t.c.cached_tokens + usage.cached_tokens,
                        output_tokens=t.c.output_tokens + usage.output_tokens,
                        reasoning_tokens=t.c.reasoning_tokens + usage.reasoning_tokens,
                        total_tokens=t.c.total_tokens + usage.total_tokens,
                    )
                )
        return len(inserted)

    async def iter_results(self, batch_id: str) -> AsyncIterator[tuple[int, bool, bytes]]:
        """``(line_no, ok, data)`` in line order, a page at a time."""
        r = schema.results
        last = 0
        while True:
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(r.c.line_no, r.c.ok, r.c.data)
                        .where(r.c.batch_id == batch_id, r.c.line_no > last)
                        .order_by(r.c.line_no)
                        .limit(_RESULT_PAGE)
                    )
                ).all()
            for row in rows:
                yield row.line_no, row.ok, row.data
            if len(rows) < _RESULT_PAGE:
                return
            last = rows[-1].line_no

    async def set_output_ids(
        self, batch_id: str, owner: str, output_file_id: str, error_file_id: str
    ) -> None:
        """Fix the ids of the files finalization writes, so a retry reuses them."""
        t = schema.batches
        async with self._write() as conn:
            await conn.execute(
                update(t)
                .where(t.c.id == batch_id, t.c.lease_owner == owner)
                .values(output_file_id=output_file_id, error_file_id=error_file_id)
            )

    async def finish_batch(
        self,
        batch_id: str,
        owner: str,
        *,
        status: str,
        files: Sequence[FileRecord],
        output_file_id: str | None,
        error_file_id: str | None,
        unrun: int,
        now: int,
    ) -> bool:
        """Record the output files and the final status, exactly once."""
        t = schema.batches
        stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}
        async with self._write() as conn:
            res = await conn.execute(
                update(t)
                .where(t.c.id == batch_id, t.c.lease_owner == owner, t.c.phase == "finalize")
                .values(
                    phase="done",
                    status=status,
                    output_file_id=output_file_id,
                    error_file_id=error_file_id,
                    failed=t.c.failed + unrun,
                    lease_owner=None,
                    lease_until=None,
                    **{stamp[status]: now},
                )
            )
            if not res.rowcount:
                return False
            for rec in files:
                await conn.execute(insert(schema.files).values(**_file_values(rec)))
        return True

    async def purge_results(self, batch_id: str) -> None:
        """Drop per-line results once they live in the output files."""
        async with self._write() as conn:
            await conn.execute(schema.results.delete().where(schema.results.c.batch_id == batch_id))
            await conn.execute(schema.shards.delete().where(schema.shards.c.batch_id == batch_id))

    # ------------------------------------------------------- worker registry

    async def heartbeat_worker(self, owner: str, now: float, backends: Sequence[str]) -> None:
        """Record that ``owner`` is alive and which backends it is sending to."""
        w = schema.workers
        values = {"owner": owner, "heartbeat_at": now, "backends": sorted(backends)}
        async with self._write() as conn:
            stmt = self._insert(w).values(**values)
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


class _AsyncLock:
    """An asyncio.Lock created lazily, inside the running loop."""

    def __init__(self) -> None:
        import asyncio

        self._lock: asyncio.Lock | None = None

    async def __aenter__(self) -> None:
        import asyncio

        if self._lock is None:
            self._lock = asyncio.Lock()
        await self._lock.acquire()

    async def __aexit__(self, *_exc: object) -> None:
        assert self._lock is not None
        self._lock.release()
