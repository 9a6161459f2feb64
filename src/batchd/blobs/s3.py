"""Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph, R2, ...).

``s3://bucket/prefix``; the endpoint, region and credentials come from the
standard AWS settings (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, profiles, instance roles) through boto3.

Uploads stream as multipart uploads, one part (8 MiB) in memory at a time; a blob
smaller than one part is a single PUT. Nothing is visible under the key until the
upload completes, and an aborted upload leaves nothing. Reads are ranged GETs,
streamed in chunks. boto3 is blocking, so every call runs on a small thread pool
of its own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlparse

from batchd.ids import is_valid_id

PART_SIZE = 8 * 1024 * 1024
"""Multipart part size (S3 requires at least 5 MiB for every part but the last)."""
MIN_PART_SIZE = 5 * 1024 * 1024
"""S3's smallest part but the last, and so the smallest source worth a server-side copy."""
CHUNK = 1 << 20
T = TypeVar("T")


class S3BlobWriter:
    def __init__(self, store: S3BlobStore, key: str) -> None:
        self._store = store
        self._key = key
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.size = 0

    async def write(self, data: bytes) -> None:
        self._buf += data
        self.size += len(data)
        while len(self._buf) >= self._store.part_size:
            part = bytes(self._buf[: self._store.part_size])
            del self._buf[: self._store.part_size]
            await self._upload_part(part)

    async def _upload_part(self, part: bytes) -> None:
        s = self._store
        if self._upload_id is None:
            created = await s.call(s.client.create_multipart_upload, Bucket=s.bucket, Key=self._key)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        resp = await s.call(
            s.client.upload_part,
            Bucket=s.bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=part,
        )
        self._parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    async def copy_part(self, source_key: str, size: int) -> None:
        """Append a whole object as one part, copied inside S3 (UploadPartCopy): the
        bytes never pass through this process. Needs ``size >= MIN_PART_SIZE`` (unless
        it is the last part) and no bytes buffered before it."""
        s = self._store
        if self._buf:
            await self._upload_part(bytes(self._buf))
            self._buf.clear()
        if self._upload_id is None:
            created = await s.call(s.client.create_multipart_upload, Bucket=s.bucket, Key=self._key)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        resp = await s.call(
            s.client.upload_part_copy,
            Bucket=s.bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            CopySource={"Bucket": s.bucket, "Key": source_key},
        )
        self._parts.append({"PartNumber": number, "ETag": resp["CopyPartResult"]["ETag"]})
        self.size += size

    @property
    def buffered(self) -> int:
        return len(self._buf)

    async def commit(self) -> int:
        s = self._store
        if self._upload_id is None:
            await s.call(s.client.put_object, Bucket=s.bucket, Key=self._key, Body=bytes(self._buf))
        else:
            if self._buf:
                await self._upload_part(bytes(self._buf))
            await s.call(
                s.client.complete_multipart_upload,
                Bucket=s.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._buf.clear()
        return self.size

    async def abort(self) -> None:
        self._buf.clear()
        if self._upload_id is not None:
            s = self._store
            await s.call(
                s.client.abort_multipart_upload,
                Bucket=s.bucket,
                Key=self._key,
                UploadId=self._upload_id,
            )


class S3BlobStore:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        part_size: int = PART_SIZE,
        threads: int = 16,
    ) -> None:
        if client is None:
            import boto3

            client = boto3.session.Session().client("s3")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="s3")

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> S3BlobStore:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        return cls(parsed.netloc, parsed.path, **kwargs)

    async def call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, **kwargs))

    def _key(self, key: str) -> str:
        # Keys are ids batchd issued; refusing anything else keeps user input out of keys.
        if not is_valid_id(key):
            raise ValueError(f"not a blob key: {key!r}")
        return f"{self.prefix}/files/{key}" if self.prefix else f"files/{key}"

    async def open_writer(self, key: str) -> S3BlobWriter:
        return S3BlobWriter(self, self._key(key))

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if end is not None and end <= start:
            return
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            resp = await self.call(self.client.get_object, **kwargs)
        except self.client.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "InvalidRange":
                return  # starts at or past the end: nothing to read
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"NoSuchKey: {key}") from exc
            raise
        body = resp["Body"]
        try:
            while True:
                chunk = await self.call(body.read, amt=CHUNK)
                if not chunk:
                    break
                yield chunk
        finally:
            await self.call(body.close)

    async def delete(self, key: str) -> None:
        await self.call(self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    async def concat(self, key: str, sources: Sequence[tuple[str, int]]) -> int:
        # One multipart upload: nothing is visible under ``key`` until it completes.
        # Sources of at least S3's minimum part size are copied server-side (the usual
        # case: SDKs send 64 MiB parts); smaller ones are streamed through the buffer,
        # which is flushed as a part of its own before a copy when it is big enough.
        writer = S3BlobWriter(self, self._key(key))
        try:
            for source, size in sources:
                if size >= MIN_PART_SIZE and (
                    writer.buffered == 0 or writer.buffered >= MIN_PART_SIZE
                ):
                    await self._copy_checked(writer, source, size)
                else:
                    async for chunk in self.read(source):
                        await writer.write(chunk)
            return await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def _copy_checked(self, writer: S3BlobWriter, source: str, size: int) -> None:
        try:
            await writer.copy_part(self._key(source), size)
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"NoSuchKey: {source}") from exc
            raise

    async def close(self) -> None:
        self._pool.shutdown(wait=False)
