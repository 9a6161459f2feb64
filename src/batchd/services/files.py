"""Files: upload (streamed), retrieve, list, download, delete."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

from batchd.blobs.base import BlobStore, BlobWriter
from batchd.clock import now
from batchd.errors import InvalidRequest, NotFound, PayloadTooLarge
from batchd.ids import is_valid_id, new_file_id
from batchd.services.file_policy import (
    check_expires_after,
    check_filename,
    check_purpose,
    file_expiry,
)
from batchd.settings import Settings
from batchd.store.base import Store
from batchd.store.records import FileRecord, Page


class Upload:
    """An upload in progress: bytes go straight to blob storage as they arrive."""

    def __init__(self, service: FileService, writer: BlobWriter, file_id: str, tenant: str) -> None:
        self._service = service
        self._writer = writer
        self.file_id = file_id
        self.tenant = tenant
        self.limit = service.settings.max_file_bytes
        self._closed = False
        self.digest = hashlib.sha256()
        """Of the bytes so far (an Idempotency-Key compares requests by it)."""

    async def write(self, data: bytes) -> None:
        if self._writer.size + len(data) > self.limit:
            raise PayloadTooLarge(
                f"File is larger than the {self.limit} byte limit for this purpose.",
                code="file_too_large",
                param="file",
            )
        self.digest.update(data)
        await self._writer.write(data)

    def expect_purpose(self, purpose: str) -> None:
        """Tighten the size limit once the purpose is known (it may arrive first)."""
        if purpose == "batch":
            self.limit = min(self.limit, self._service.settings.max_batch_file_bytes)
            if self._writer.size > self.limit:
                raise PayloadTooLarge(
                    f"Batch input files may be at most {self.limit} bytes.",
                    code="file_too_large",
                    param="file",
                )

    async def finish(
        self, *, filename: str, purpose: str | None, expires_after: tuple[str, int] | None
    ) -> FileRecord:
        purpose = check_purpose(purpose)
        self.expect_purpose(purpose)
        check_filename(purpose, filename)
        created = now()
        expires_at = file_expiry(
            purpose, check_expires_after(expires_after), created, self._service.settings
        )
        size = await self._writer.commit()
        self._closed = True
        rec = FileRecord(
            id=self.file_id,
            tenant=self.tenant,
            filename=filename,
            purpose=purpose,
            bytes=size,
            created_at=created,
            expires_at=expires_at,
        )
        await self._service.store.insert_file(rec)
        return rec

    async def abort(self) -> None:
        if not self._closed:
            self._closed = True
            await self._writer.abort()


class FileService:
    def __init__(self, *, store: Store, blobs: BlobStore, settings: Settings) -> None:
        self.store = store
        self.blobs = blobs
        self.settings = settings

    async def begin_upload(self, tenant: str) -> Upload:
        file_id = new_file_id()
        return Upload(self, await self.blobs.open_writer(file_id), file_id, tenant)

    async def get(self, tenant: str, file_id: str) -> FileRecord:
        rec = await self.store.get_file(file_id, tenant=tenant) if is_valid_id(file_id) else None
        if rec is None:
            raise NotFound(f"No such File object: {file_id}", param="id", code="file_not_found")
        return rec

    async def list(
        self, tenant: str, *, purpose: str | None, after: str | None, limit: int, order: str
    ) -> Page[FileRecord]:
        if not 1 <= limit <= 10_000:
            raise InvalidRequest(
                "limit must be between 1 and 10000.", param="limit", code="invalid_value"
            )
        if order not in ("asc", "desc"):
            raise InvalidRequest(
                "order must be 'asc' or 'desc'.", param="order", code="invalid_value"
            )
        return await self.store.list_files(
            tenant=tenant, purpose=purpose, after=after, limit=limit, order=order
        )

    async def content(self, tenant: str, file_id: str) -> tuple[FileRecord, AsyncIterator[bytes]]:
        rec = await self.get(tenant, file_id)
        return rec, self.blobs.read(rec.id)

    async def delete(self, tenant: str, file_id: str) -> str:
        rec = await self.get(tenant, file_id)
        await self.store.delete_file(rec.id, tenant=tenant, now=now())
        # The bytes go now, unless a running batch still reads them (the worker's
        # purge removes them once it is done).
        if not await self.store.file_in_use(rec.id):
            await self.blobs.delete(rec.id)
            await self.store.forget_files([rec.id])
        return rec.id
