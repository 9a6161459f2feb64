"""The S3 blob store against a local S3-compatible server (moto's ThreadedMotoServer)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from unittest import mock

import pytest

from batchd.blobs.open import open_blob_store
from batchd.blobs.s3 import S3BlobStore
from store.s3 import client, env_for, moto_s3, new_bucket

pytestmark = pytest.mark.anyio
PART = 5 * 1024 * 1024  # S3's smallest part


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture
async def blobs(endpoint: str) -> AsyncIterator[S3BlobStore]:
    with mock.patch.dict(os.environ, env_for(endpoint)):
        store = open_blob_store(f"s3://{new_bucket(endpoint)}/some/prefix", data_dir=Path("."))
    assert isinstance(store, S3BlobStore)
    store.part_size = PART
    yield store
    await store.close()


async def read_all(blobs: S3BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in blobs.read(key, start, end)])


async def test_multipart_upload_and_ranged_reads(blobs: S3BlobStore) -> None:
    data = bytes(range(256)) * (11 * 1024 * 1024 // 256 + 7)  # a bit over two parts
    w = await blobs.open_writer("file-big000000000")
    for i in range(0, len(data), 300_000):
        await w.write(data[i : i + 300_000])
        assert len(w._buf) < PART  # never more than one part in memory
    assert await w.commit() == len(data)
    assert len(w._parts) == 3  # streamed as a multipart upload
    assert await read_all(blobs, "file-big000000000") == data
    assert await read_all(blobs, "file-big000000000", 5, 17) == data[5:17]
    tail = len(data) - 1000
    assert await read_all(blobs, "file-big000000000", tail) == data[tail:]
    assert (
        await read_all(blobs, "file-big000000000", PART - 3, PART + 3) == data[PART - 3 : PART + 3]
    )
    assert await read_all(blobs, "file-big000000000", len(data)) == b""
    key = "some/prefix/files/file-big000000000"
    assert client(blobs.client.meta.endpoint_url).head_object(Bucket=blobs.bucket, Key=key)  # type: ignore[attr-defined]


async def test_small_blob_is_one_put_and_delete(blobs: S3BlobStore) -> None:
    w = await blobs.open_writer("file-small0000000")
    await w.write(b'{"a": 1}\n')
    assert await w.commit() == 9
    assert w._upload_id is None
    assert await read_all(blobs, "file-small0000000") == b'{"a": 1}\n'
    await blobs.delete("file-small0000000")
    await blobs.delete("file-small0000000")  # missing: not an error
    with pytest.raises(Exception, match="NoSuchKey"):
        await read_all(blobs, "file-small0000000")


async def test_aborted_upload_leaves_nothing(blobs: S3BlobStore) -> None:
    w = await blobs.open_writer("file-abort0000000")
    await w.write(b"x" * (PART + 10))
    assert w._upload_id is not None
    await w.abort()
    with pytest.raises(Exception, match="NoSuchKey"):
        await read_all(blobs, "file-abort0000000")
    s3 = client(blobs.client.meta.endpoint_url)  # type: ignore[attr-defined]
    assert not s3.list_multipart_uploads(Bucket=blobs.bucket).get("Uploads")  # type: ignore[attr-defined]


async def test_keys_must_be_ids(blobs: S3BlobStore) -> None:
    with pytest.raises(ValueError):
        await blobs.open_writer("../etc/passwd")
