"""The Uploads API: a large file sent in parts, in parallel and in any order, then
published as one File.

Each part streams to a blob of its own (never held whole in memory) and is recorded
only once its blob is durable. Completion concatenates the named parts into the
File's blob inside the blob store (engine-free: a temp file renamed into place, or an
S3 multipart upload with server-side part copies), then publishes the File and marks
the upload completed in one transaction. A crash before that transaction leaves no
File (the blob is unreachable and purged once the upload expires); after it, a
complete File. The worker's purge drops parts of finished and expired uploads
(engine/upload_purge.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from batchd.blobs.base import BlobStore, BlobWriter
from batchd.clock import now
from batchd.engine.upload_purge import drop_upload_blobs
from batchd.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from batchd.ids import is_valid_id, new_file_id, new_part_id, new_upload_id
from batchd.services.file_policy import (
    check_expires_after,
    check_filename,
    check_purpose,
    file_expiry,
    size_limit,
)
from batchd.settings import Settings
from batchd.store.base import Store
from batchd.store.records import FileRecord
from batchd.store.upload_records import PartRecord, UploadRecord


class PartUpload:
    """One part on its way in: bytes go straight to the part's blob."""

    def __init__(self, upload: UploadRecord, writer: BlobWriter, part_id: str, limit: int) -> None:
        self.upload = upload
        self.part_id = part_id
        self._writer = writer
        self._limit = limit
        self._closed = False

    async def write(self, data: bytes) -> None:
        if self._writer.size + len(data) > self._limit:
            raise PayloadTooLarge(
                f"Upload parts may be at most {self._limit} bytes.",
                code="part_too_large",
                param="data",
            )
        await self._writer.write(data)

    def expect_purpose(self, purpose: str) -> None:
        """A part has no purpose field (the multipart receiver's interface)."""

    async def commit(self) -> int:
        size = await self._writer.commit()
        self._closed = True
        return size

    async def abort(self) -> None:
        if not self._closed:
            self._closed = True
            await self._writer.abort()


class UploadService:
    def __init__(self, *, store: Store, blobs: BlobStore, settings: Settings) -> None:
        self.store = store
        self.blobs = blobs
        self.settings = settings

    async def create(
        self,
        tenant: str,
        *,
        size: int,
        filename: str,
        mime_type: str,
        purpose: str,
        expires_after: tuple[str, int] | None = None,
    ) -> UploadRecord:
        purpose = check_purpose(purpose)
        check_filename(purpose, filename, param="filename")
        if not filename.strip() or len(filename) > 255:
            raise InvalidRequest(
                "filename must be 1 to 255 characters.", param="filename", code="invalid_value"
            )
        if not mime_type.strip():
            raise InvalidRequest("mime_type must not be empty.", param="mime_type",
                                 code="invalid_value")  # fmt: skip
        limit = min(self.settings.max_upload_bytes, size_limit(purpose, self.settings))
        if size < 0:
            raise InvalidRequest("bytes must not be negative.", param="bytes", code="invalid_value")
        if size > limit:
            raise InvalidRequest(
                f"An upload of purpose {purpose!r} may be at most {limit} bytes.",
                param="bytes",
                code="file_too_large",
            )
        created = now()
        rec = UploadRecord(
            id=new_upload_id(),
            tenant=tenant,
            filename=filename,
            purpose=purpose,
            bytes=size,
            mime_type=mime_type,
            created_at=created,
            expires_at=created + self.settings.upload_ttl,
            file_expires_after=check_expires_after(expires_after),
        )
        await self.store.insert_upload(rec)
        return rec

    async def get(self, tenant: str, upload_id: str) -> UploadRecord:
        rec = (
            await self.store.get_upload(upload_id, tenant=tenant)
            if is_valid_id(upload_id)
            else None
        )
        if rec is None:
            raise NotFound(
                f"No upload found with id '{upload_id}'.", param="upload_id",
                code="upload_not_found",
            )  # fmt: skip
        return rec

    async def file_of(self, rec: UploadRecord) -> FileRecord | None:
        """The File a completed upload became (``None`` if deleted since)."""
        if rec.status != "completed" or rec.file_id is None:
            return None
        return await self.store.get_file(rec.file_id, tenant=rec.tenant)

    async def begin_part(self, tenant: str, upload_id: str) -> PartUpload:
        rec = _pending(await self.get(tenant, upload_id), what="add parts to")
        part_id = new_part_id()
        writer = await self.blobs.open_writer(part_id)
        return PartUpload(rec, writer, part_id, self.settings.max_upload_part_bytes)

    async def finish_part(self, part: PartUpload) -> PartRecord:
        """Record a part whose bytes all arrived; on refusal its blob goes again."""
        size = await part.commit()
        rec = PartRecord(id=part.part_id, upload_id=part.upload.id, bytes=size, created_at=now())
        added, upload = await self.store.add_part(
            rec, tenant=part.upload.tenant, now=rec.created_at,
            max_total=self.settings.max_upload_bytes,
        )  # fmt: skip
        if added:
            return rec
        await self.blobs.delete(part.part_id)
        if upload is None:
            raise NotFound(f"No upload found with id '{part.upload.id}'.", param="upload_id",
                           code="upload_not_found")  # fmt: skip
        _pending(upload, what="add parts to")
        raise InvalidRequest(
            f"The parts of an upload may total at most {self.settings.max_upload_bytes} bytes.",
            param="data",
            code="upload_too_large",
        )

    async def complete(
        self, tenant: str, upload_id: str, *, part_ids: Sequence[str], md5: str | None
    ) -> tuple[UploadRecord, FileRecord | None]:
        rec = await self.get(tenant, upload_id)
        if rec.status == "completed":
            # A retry (say, after the first answer was lost): the same upload again.
            return rec, await self.file_of(rec)
        _pending(rec, what="complete")
        parts = await self._ordered_parts(rec, part_ids)
        total = sum(p.bytes for p in parts)
        if total != rec.bytes:
            raise InvalidRequest(
                f"The number of bytes uploaded ({total}) does not match the number of bytes "
                f"specified when the upload was created ({rec.bytes}).",
                param="part_ids",
                code="bytes_mismatch",
            )
        if md5 is not None and md5.strip().lower() != await self._md5(parts):
            raise InvalidRequest(
                "The md5 checksum of the uploaded bytes does not match the md5 provided.",
                param="md5",
                code="md5_mismatch",
            )
        # The id is reserved before any byte is written, so a retry after a crash writes
        # the same blob and the purge knows which blob an abandoned completion left.
        file_id = await self.store.reserve_upload_file(rec.id, new_file_id())
        try:
            size = await self.blobs.concat(file_id, [(p.id, p.bytes) for p in parts])
        except FileNotFoundError:
            raise Conflict(
                f"Upload {rec.id} is no longer pending.", param="upload_id", code="invalid_state"
            ) from None
        created = now()
        file = FileRecord(
            id=file_id,
            tenant=tenant,
            filename=rec.filename,
            purpose=rec.purpose,
            bytes=size,
            created_at=created,
            expires_at=file_expiry(rec.purpose, rec.file_expires_after, created, self.settings),
        )
        if not await self.store.complete_upload(rec.id, file, now=created):
            latest = await self.get(tenant, upload_id)
            if latest.status == "completed":  # a concurrent completion won
                return latest, await self.file_of(latest)
            await self.blobs.delete(file_id)
            _pending(latest, what="complete")
            raise Conflict(f"Upload {rec.id} has expired.", param="upload_id",
                           code="upload_expired")  # fmt: skip
        rec.status, rec.file_id = "completed", file_id
        # The File has its own copy now; the parts go at once (the purge would too).
        await drop_upload_blobs(self.store, self.blobs, rec)
        return rec, file

    async def cancel(self, tenant: str, upload_id: str) -> UploadRecord:
        await self.get(tenant, upload_id)
        rec = await self.store.cancel_upload(upload_id, tenant=tenant)
        if rec is None:
            raise NotFound(f"No upload found with id '{upload_id}'.", param="upload_id",
                           code="upload_not_found")  # fmt: skip
        if rec.status != "cancelled":
            _pending(rec, what="cancel")
        await drop_upload_blobs(self.store, self.blobs, rec)
        return rec

    async def _ordered_parts(
        self, rec: UploadRecord, part_ids: Sequence[str]
    ) -> list[PartRecord]:
        if not part_ids:
            raise InvalidRequest(
                "part_ids must list at least one part.", param="part_ids", code="invalid_value"
            )
        if len(set(part_ids)) != len(part_ids):
            raise InvalidRequest(
                "part_ids must not repeat a part.", param="part_ids", code="invalid_value"
            )
        known = {p.id: p for p in await self.store.upload_parts(rec.id)}
        missing = [pid for pid in part_ids if pid not in known]
        if missing:
            raise InvalidRequest(
                f"No part with id '{missing[0]}' in upload {rec.id}.",
                param="part_ids",
                code="invalid_value",
            )
        return [known[pid] for pid in part_ids]

    async def _md5(self, parts: Sequence[PartRecord]) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        for part in parts:
            async for chunk in self.blobs.read(part.id):
                digest.update(chunk)
        return digest.hexdigest()


def _pending(rec: UploadRecord, *, what: str) -> UploadRecord:
    """``rec`` if it still accepts parts, else the error for its state."""
    if rec.status == "pending" and rec.expires_at > now():
        return rec
    status = "expired" if rec.status == "pending" else rec.status
    raise Conflict(
        f"Cannot {what} upload {rec.id}: its status is '{status}'.",
        param="upload_id",
        code="invalid_state",
    )
