"""Concatenating blobs (an Upload's completion): S3 against moto's server (server-side
part copies where parts are big enough, streamed otherwise), and the local store."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from unittest import mock

import pytest

from batchd.blobs.base import BlobStore
from batchd.blobs.local import LocalBlobStore
from batchd.blobs.open import open_blob_store
from batchd.blobs.s3 import MIN_PART_SIZE, S3BlobStore
from store.s3 import env_for, moto_s3, new_bucket

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture(params=["local", "s3"])
async def blobs(
    request: pytest.FixtureRequest, tmp_path: Path, endpoint: str
) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        store: BlobStore = LocalBlobStore(tmp_path)
    else:
        with mock.patch.dict(os.environ, env_for(endpoint)):
            store = open_blob_store(f"s3://{new_bucket(endpoint)}/pre", data_dir=Path("."))
        assert isinstance(store, S3BlobStore)
        store.part_size = MIN_PART_SIZE
    yield store
    await store.close()


async def put(blobs: BlobStore, key: str, data: bytes) -> tuple[str, int]:
    w = await blobs.open_writer(key)
    await w.write(data)
    await w.commit()
    return key, len(data)


async def read_all(blobs: BlobStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in blobs.read(key)])


async def test_concat_big_and_small_parts_in_order(blobs: BlobStore) -> None:
    big = MIN_PART_SIZE + 1000
    pieces = [os.urandom(big), os.urandom(big), b"small", os.urandom(big), b"tail"]
    sources = [await put(blobs, f"part_{i:012d}", p) for i, p in enumerate(pieces)]
    order = [sources[1], sources[0], sources[2], sources[3], sources[4]]
    size = await blobs.concat("file-aaaaaaaaaaaa", order)
    expected = pieces[1] + pieces[0] + pieces[2] + pieces[3] + pieces[4]
    assert size == len(expected)
    assert await read_all(blobs, "file-aaaaaaaaaaaa") == expected


async def test_concat_of_small_parts_only(blobs: BlobStore) -> None:
    sources = [await put(blobs, f"part_{i:012d}", bytes([i]) * 10) for i in range(3)]
    assert await blobs.concat("file-bbbbbbbbbbbb", sources) == 30
    assert await read_all(blobs, "file-bbbbbbbbbbbb") == b"\0" * 10 + b"\1" * 10 + b"\2" * 10


async def test_concat_with_a_missing_source_leaves_nothing(blobs: BlobStore) -> None:
    first = await put(blobs, "part_000000000001", os.urandom(MIN_PART_SIZE))
    for missing in (("part_000000000009", MIN_PART_SIZE), ("part_000000000008", 5)):
        with pytest.raises(FileNotFoundError):
            await blobs.concat("file-cccccccccccc", [first, missing])
        with pytest.raises(FileNotFoundError):
            await read_all(blobs, "file-cccccccccccc")


@pytest.fixture
async def s3_blobs(endpoint: str) -> AsyncIterator[S3BlobStore]:
    with mock.patch.dict(os.environ, env_for(endpoint)):
        store = open_blob_store(f"s3://{new_bucket(endpoint)}/pre", data_dir=Path("."))
    assert isinstance(store, S3BlobStore)
    store.part_size = MIN_PART_SIZE
    yield store
    await store.close()


async def test_s3_copies_big_parts_server_side(s3_blobs: S3BlobStore) -> None:
    blobs = s3_blobs
    sources = [await put(blobs, f"part_{i:012d}", os.urandom(MIN_PART_SIZE)) for i in range(2)]
    calls: list[str] = []
    real = blobs.call

    async def spy(fn, /, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(getattr(fn, "__name__", str(fn)))
        return await real(fn, **kwargs)

    with mock.patch.object(blobs, "call", spy):
        await blobs.concat("file-dddddddddddd", sources)
    assert calls.count("upload_part_copy") == 2 and "get_object" not in calls
