"""The store contract for uploads, idempotency keys and queue admission, on every
store (SQLite with and without its fast paths, PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest

from batchd.store.base import Store
from batchd.store.records import BatchRecord, FileRecord
from batchd.store.upload_records import IdempotencyRecord, PartRecord, UploadRecord
from store.test_state_machine import T0, new_batch

pytestmark = pytest.mark.anyio

UP = "upload_aaaaaaaaaaaa"
BIG = 8 << 30


def upload(**kw: object) -> UploadRecord:
    values: dict[str, object] = {
        "id": UP, "tenant": "t", "filename": "a.jsonl", "purpose": "batch", "bytes": 30,
        "mime_type": "text/jsonl", "created_at": 100, "expires_at": 200,
    }  # fmt: skip
    values.update(kw)
    return UploadRecord(**values)  # type: ignore[arg-type]


def part(n: int, size: int = 10) -> PartRecord:
    return PartRecord(f"part_{n:012d}", UP, size, 110)


def file_rec(file_id: str) -> FileRecord:
    return FileRecord(id=file_id, tenant="t", filename="a.jsonl", purpose="batch", bytes=30,
                      created_at=150)  # fmt: skip


async def test_parts_only_while_pending_and_within_bounds(store: Store) -> None:
    await store.insert_upload(upload())
    assert await store.get_upload(UP, tenant="other") is None
    added, rec = await store.add_part(part(1), tenant="t", now=120, max_total=25)
    assert added and rec is not None and rec.status == "pending"
    assert (await store.add_part(part(2), tenant="t", now=120, max_total=25))[0]
    # Beyond the total bound, for another tenant, or after expiry: refused.
    assert not (await store.add_part(part(3), tenant="t", now=120, max_total=25))[0]
    assert await store.add_part(part(4), tenant="u", now=120, max_total=BIG) == (False, None)
    assert not (await store.add_part(part(5), tenant="t", now=200, max_total=BIG))[0]
    assert sorted(p.id for p in await store.upload_parts(UP)) == [part(1).id, part(2).id]


async def test_completion_publishes_once_and_reserves_one_file_id(store: Store) -> None:
    await store.insert_upload(upload())
    first = await store.reserve_upload_file(UP, "file-aaaaaaaaaaaa")
    assert first == "file-aaaaaaaaaaaa"
    assert await store.reserve_upload_file(UP, "file-bbbbbbbbbbbb") == first  # a retry
    assert not await store.complete_upload(UP, file_rec(first), now=200)  # expired
    assert await store.get_file(first, tenant=None) is None
    assert await store.complete_upload(UP, file_rec(first), now=150)
    assert not await store.complete_upload(UP, file_rec(first), now=150)  # exactly once
    got = await store.get_upload(UP, tenant="t")
    assert got is not None and (got.status, got.file_id) == ("completed", first)
    assert await store.get_file(first, tenant="t") is not None
    assert not (await store.add_part(part(9), tenant="t", now=150, max_total=BIG))[0]
    assert (await store.cancel_upload(UP, tenant="t")).status == "completed"  # type: ignore[union-attr]


async def test_cancel_and_expiry_feed_the_purge(store: Store) -> None:
    await store.insert_upload(upload())
    await store.insert_upload(upload(id="upload_bbbbbbbbbbbb", expires_at=300))
    await store.add_part(part(1), tenant="t", now=120, max_total=BIG)
    assert await store.uploads_to_purge() == []
    cancelled = await store.cancel_upload(UP, tenant="t")
    assert cancelled is not None and cancelled.status == "cancelled"
    assert not await store.complete_upload(UP, file_rec("file-aaaaaaaaaaaa"), now=150)
    assert [u.id for u in await store.uploads_to_purge()] == [UP]
    await store.forget_upload_parts(UP)
    assert await store.upload_parts(UP) == [] and await store.uploads_to_purge() == []
    assert await store.expire_uploads(250) == 0
    assert await store.expire_uploads(300) == 1
    assert [u.status for u in await store.uploads_to_purge()] == ["expired"]


def key(fp: str = "f1", *, at: int = 1000, kind: str = "batch") -> IdempotencyRecord:
    return IdempotencyRecord("t", "k1", kind, fp, at, at + 86400)


async def test_idempotency_key_claim_finish_release_expire(store: Store) -> None:
    assert await store.claim_idempotency_key(key(), stale_before=0) is None
    held = await store.claim_idempotency_key(key("f2"), stale_before=0)
    assert held is not None and (held.fingerprint, held.object_id) == ("f1", None)
    # Per tenant: another tenant's same key is a different key.
    other = IdempotencyRecord("u", "k1", "batch", "f9", 1000, 90000)
    assert await store.claim_idempotency_key(other, stale_before=0) is None
    await store.finish_idempotency_key("t", "k1", object_id="batch_x", response={"id": "batch_x"})
    held = await store.claim_idempotency_key(key(at=1001), stale_before=0)
    assert held is not None and held.response == {"id": "batch_x"}
    await store.release_idempotency_key("t", "k1")  # finished keys are not released
    assert await store.claim_idempotency_key(key(at=1002), stale_before=0) is not None
    # After 24 h the key is free again; a purge drops expired rows.
    assert await store.claim_idempotency_key(key("f3", at=1000 + 86400), stale_before=0) is None
    assert await store.purge_idempotency_keys(1000 + 2 * 86400) == 2


async def test_unfinished_claims_are_released_or_taken_over_when_stale(store: Store) -> None:
    assert await store.claim_idempotency_key(key(), stale_before=0) is None
    await store.release_idempotency_key("t", "k1")
    assert await store.claim_idempotency_key(key("f2"), stale_before=0) is None
    assert await store.claim_idempotency_key(key("f3", at=1010), stale_before=999) is not None
    assert await store.claim_idempotency_key(key("f3", at=1100), stale_before=1001) is None


async def test_concurrent_claims_have_one_winner(store: Store) -> None:
    outcomes = await asyncio.gather(
        *(store.claim_idempotency_key(key(f"f{i}"), stale_before=0) for i in range(8))
    )
    assert sum(o is None for o in outcomes) == 1


async def admitted(store: Store, batch: BatchRecord, **kw: int | None) -> tuple[str, int] | None:
    claimed = await store.claim_validation("w", T0, T0 + 30)
    assert claimed is not None and claimed.id == batch.id
    values: dict[str, int | None] = {"tokens": 100, "requests": 10, "max_tokens": None,
                                     "max_requests": None}  # fmt: skip
    values.update(kw)
    return await store.admit_batch(batch.id, "w", tenant="t", **values)  # type: ignore[arg-type]


async def test_queue_admission_counts_unfinished_batches(store: Store) -> None:
    a = await new_batch(store, "batch_aaaaaaaaaaaa")
    assert await admitted(store, a, max_tokens=150) is None
    b = await new_batch(store, "batch_bbbbbbbbbbbb")
    assert await admitted(store, b, max_tokens=150) == ("tokens", 150)
    assert await store.admit_batch(b.id, "w", tenant="t", tokens=100, requests=10,
                                   max_tokens=None, max_requests=15) == ("requests", 15)
    # Re-admitting the same batch (a retried validation) does not count it twice.
    assert await store.admit_batch(a.id, "w", tenant="t", tokens=100, requests=10,
                                   max_tokens=150, max_requests=None) is None
    # Another tenant has its own queue.
    assert await store.admit_batch(b.id, "w", tenant="u", tokens=100, requests=10,
                                   max_tokens=150, max_requests=None) is None
    # Once the first batch is done, the second fits.
    await store.fail_batch(a.id, "w", errors=[], total=0, model=None, now=5)
    assert await store.admit_batch(b.id, "w", tenant="t", tokens=100, requests=10,
                                   max_tokens=150, max_requests=None) is None


async def test_concurrent_admissions_cannot_both_pass_a_limit(store: Store) -> None:
    ids = [f"batch_{c * 12}" for c in "abcdef"]
    for batch_id in ids:
        await new_batch(store, batch_id)
        assert await store.claim_validation("w", T0, T0 + 30) is not None
    admissions = [
        store.admit_batch(i, "w", tenant="t", tokens=100, requests=1, max_tokens=250,
                          max_requests=None)
        for i in ids
    ]  # fmt: skip
    outcomes = await asyncio.gather(*admissions)
    assert sum(o is None for o in outcomes) == 2
