"""The store's state machine: the contract every store meets (SQLite and PostgreSQL).

validate -> run (shards under leases) -> finalize -> done, exactly once; cancel and
expiry; results idempotent. The ``store`` fixture (conftest.py) runs each case on
every implementation: SQLite (with and without its fast paths) and PostgreSQL.
"""

from __future__ import annotations

import dataclasses

import pytest

from batchd.states import BatchPhase, BatchStatus
from batchd.store.base import Store
from batchd.store.records import BatchRecord, FileRecord, ResultRow, ShardRecord, Usage

pytestmark = pytest.mark.anyio

A, B = "host:1:a", "host:2:b"
T0 = 1_000_000.0


async def new_batch(
    store: Store, batch_id: str = "batch_aaaaaaaaaaaa", *, expires_at: int = 2_000_000
) -> BatchRecord:
    await store.insert_file(
        FileRecord(
            id="file-aaaaaaaaaaaa",
            tenant="t",
            filename="in.jsonl",
            purpose="batch",
            bytes=10,
            created_at=1,
        )
    ) if await store.get_file("file-aaaaaaaaaaaa", tenant=None) is None else None
    rec = BatchRecord(
        id=batch_id,
        tenant="t",
        input_file_id="file-aaaaaaaaaaaa",
        endpoint="/v1/chat/completions",
        completion_window="24h",
        status="validating",
        created_at=1,
        expires_at=expires_at,
    )
    await store.insert_batch(rec)
    return rec


def shards_for(batch_id: str, n: int) -> list[ShardRecord]:
    return [
        ShardRecord(batch_id, i, i * 100, (i + 1) * 100, i * 10 + 1, i * 10 + 10, 10)
        for i in range(n)
    ]


def row(batch_id: str, line: int, ok: bool = True, tokens: int = 1) -> ResultRow:
    return ResultRow(
        batch_id,
        line,
        f"c{line}",
        ok,
        b"{}",
        Usage(input_tokens=tokens, total_tokens=tokens) if ok else None,
    )


async def started(store: Store, n_shards: int = 2) -> BatchRecord:
    b = await new_batch(store)
    claimed = await store.claim_validation(A, T0, T0 + 30)
    assert claimed is not None and claimed.id == b.id
    await store.start_batch(
        b.id, A, total=n_shards * 10, model="m", shards=shards_for(b.id, n_shards), now=5
    )
    got = await store.get_batch(b.id, tenant="t")
    assert got is not None
    return got


async def test_validation_claim_is_exclusive_and_expires(store: Store) -> None:
    b = await new_batch(store)
    assert (await store.claim_validation(A, T0, T0 + 30)).id == b.id  # type: ignore[union-attr]
    assert await store.claim_validation(B, T0 + 1, T0 + 31) is None  # held by A
    # A's lease lapses: B takes over.
    assert (await store.claim_validation(B, T0 + 31, T0 + 61)).id == b.id  # type: ignore[union-attr]
    # A, no longer the holder, cannot move the batch on, nor record its shards: the
    # new holder's own shards (same numbers) go in without a clash.
    assert not await store.start_batch(
        b.id, A, total=2, model="m", shards=shards_for(b.id, 2), now=5
    )
    assert (await store.get_batch(b.id, tenant=None)).phase == "validate"  # type: ignore[union-attr]
    assert await store.start_batch(b.id, B, total=2, model="m", shards=shards_for(b.id, 2), now=6)
    assert (await store.get_batch(b.id, tenant=None)).phase == "run"  # type: ignore[union-attr]
    # Once it runs, a late start by anyone changes nothing.
    assert not await store.start_batch(
        b.id, B, total=2, model="m", shards=shards_for(b.id, 2), now=7
    )


async def test_start_batch(store: Store) -> None:
    b = await started(store)
    assert b.phase == "run" and b.status == "in_progress"
    assert b.total == 20 and b.model == "m" and b.in_progress_at == 5
    assert await store.claim_validation(B, T0 + 100, T0 + 130) is None


async def test_fail_batch(store: Store) -> None:
    b = await new_batch(store)
    await store.claim_validation(A, T0, T0 + 30)
    errors = [{"code": "empty_file", "message": "x", "param": None, "line": None}]
    assert not await store.fail_batch(b.id, B, errors=[], total=0, model=None, now=8)
    assert await store.fail_batch(b.id, A, errors=errors, total=0, model=None, now=9)
    # Done once: a second call (a retried validation, another engine) changes nothing,
    # so the failure is announced once.
    assert not await store.fail_batch(b.id, A, errors=[], total=0, model=None, now=10)
    got = await store.get_batch(b.id, tenant="t")
    assert got is not None
    assert (got.status, got.phase, got.failed_at, got.errors) == ("failed", "done", 9, errors)


async def test_shard_leases(store: Store) -> None:
    b = await started(store, n_shards=2)
    s0 = await store.claim_shard(A, T0, T0 + 30)
    s1 = await store.claim_shard(B, T0, T0 + 30)
    assert s0 is not None and s1 is not None
    assert {s0.shard_no, s1.shard_no} == {0, 1}
    assert await store.claim_shard(B, T0 + 1, T0 + 31) is None  # both held
    # A lease that lapsed can be taken over; a renewed one cannot.
    await store.renew_leases(B, T0 + 100)
    taken = await store.claim_shard(B, T0 + 50, T0 + 80)
    assert taken is not None and taken.shard_no == s0.shard_no
    assert await store.claim_shard(A, T0 + 50, T0 + 80) is None
    # The old holder's release does not free the new holder's claim.
    await store.release_shard(s0, A)
    assert await store.claim_shard(A, T0 + 51, T0 + 80) is None
    await store.release_shard(taken, B)
    again = await store.claim_shard(A, T0 + 52, T0 + 80)
    assert again is not None and again.shard_no == s0.shard_no
    assert b.id == again.batch_id


async def test_complete_shard_checks_the_owner(store: Store) -> None:
    # A worker whose lease lapsed while its shard ran must not mark the shard done
    # under the worker that took it over: that one may still have requests to send.
    await started(store, n_shards=1)
    mine = await store.claim_shard(A, T0, T0 + 30)
    assert mine is not None
    taken = await store.claim_shard(B, T0 + 31, T0 + 61)  # A's lease lapsed
    assert taken is not None and taken.shard_no == mine.shard_no
    assert await store.complete_shard(mine, A) is False
    # Still B's and not done: nobody else may run it, and finalization waits.
    assert await store.claim_shard(A, T0 + 32, T0 + 62) is None
    assert await store.claim_finalization(A, T0 + 32, T0 + 62) is None
    assert await store.complete_shard(taken, B) is True
    assert await store.claim_finalization(A, T0 + 33, T0 + 63) is not None


async def test_release_shard_reports_whether_the_owner_held_it(store: Store) -> None:
    await started(store, n_shards=1)
    mine = await store.claim_shard(A, T0, T0 + 30)
    assert mine is not None
    assert await store.release_shard(mine, B) is False
    assert await store.claim_shard(B, T0 + 1, T0 + 31) is None  # still A's
    assert await store.release_shard(mine, A) is True
    assert await store.claim_shard(B, T0 + 2, T0 + 32) is not None


async def test_release_leases_of_dead_owner(store: Store) -> None:
    await started(store, n_shards=1)
    assert await store.claim_shard(A, T0, T0 + 30) is not None
    assert await store.lease_owners(T0 + 1) == {A}
    await store.release_leases([A])
    assert await store.lease_owners(T0 + 1) == set()
    assert await store.claim_shard(B, T0 + 1, T0 + 30) is not None


async def test_record_results_is_idempotent(store: Store) -> None:
    b = await started(store)
    assert await store.record_results([row(b.id, 1), row(b.id, 2, ok=False)]) == 2
    # A re-sent line (after a takeover) and a duplicate in one call count once.
    assert await store.record_results([row(b.id, 1, tokens=50), row(b.id, 3), row(b.id, 3)]) == 1
    got = await store.get_batch(b.id, tenant="t")
    assert got is not None
    assert (got.completed, got.failed) == (2, 1)
    assert got.usage.input_tokens == 2 and got.usage.total_tokens == 2
    assert await store.done_lines(b.id, 1, 10) == {1, 2, 3}
    assert await store.done_lines(b.id, 3, 10) == {3}
    assert [n async for n, _, _ in store.iter_results(b.id)] == [1, 2, 3]


async def test_finalization_waits_for_every_shard(store: Store) -> None:
    b = await started(store, n_shards=2)
    s0 = await store.claim_shard(A, T0, T0 + 30)
    assert s0 is not None
    await store.complete_shard(s0, A)
    assert await store.claim_finalization(A, T0 + 1, T0 + 31) is None  # shard 1 never ran
    s1 = await store.claim_shard(A, T0 + 1, T0 + 31)
    assert s1 is not None
    assert await store.claim_finalization(A, T0 + 2, T0 + 32) is None  # shard 1 running
    await store.complete_shard(s1, A)
    fin = await store.claim_finalization(A, T0 + 3, T0 + 33)
    assert fin is not None and fin.id == b.id
    assert fin.status == "finalizing" and fin.finalizing_at == int(T0 + 3)
    assert await store.claim_finalization(B, T0 + 4, T0 + 34) is None  # held by A
    assert await store.claim_shard(B, T0 + 4, T0 + 34) is None

    await store.set_output_ids(b.id, A, "file-out000000000", "file-err000000000")
    out = FileRecord(
        id="file-out000000000",
        tenant="t",
        filename="o.jsonl",
        purpose="batch_output",
        bytes=5,
        created_at=9,
    )

    async def finish(owner: str) -> bool:
        return await store.finish_batch(
            b.id,
            owner,
            status="completed",
            files=[out],
            output_file_id=out.id,
            error_file_id=None,
            unrun=0,
            now=9,
        )

    assert await finish(B) is False  # not the holder
    assert await finish(A) is True
    assert await finish(A) is False  # exactly once
    got = await store.get_batch(b.id, tenant="t")
    assert got is not None
    assert (got.status, got.phase, got.completed_at) == ("completed", "done", 9)
    assert got.output_file_id == out.id and got.error_file_id is None
    assert (await store.get_file(out.id, tenant="t")) is not None
    assert await store.claim_finalization(A, T0 + 100, T0 + 130) is None


async def test_crashed_finalizer_is_taken_over_with_the_same_ids(store: Store) -> None:
    b = await started(store, n_shards=1)
    s = await store.claim_shard(A, T0, T0 + 30)
    await store.complete_shard(s, A)  # type: ignore[arg-type]
    assert await store.claim_finalization(A, T0, T0 + 30) is not None
    await store.set_output_ids(b.id, A, "file-out000000000", "file-err000000000")
    # A dies; after its lease lapses B finalizes, reusing the recorded ids.
    again = await store.claim_finalization(B, T0 + 31, T0 + 61)
    assert again is not None
    assert (again.output_file_id, again.error_file_id) == ("file-out000000000", "file-err000000000")
    assert again.status == "finalizing"


async def test_cancel(store: Store) -> None:
    b = await started(store, n_shards=3)
    s0 = await store.claim_shard(A, T0, T0 + 30)
    assert s0 is not None
    got = await store.request_cancel(b.id, tenant="t", now=7)
    assert got is not None and (got.status, got.cancelling_at, got.stop_reason) == (
        "cancelling",
        7,
        "cancel",
    )
    assert await store.request_cancel(b.id, tenant="other", now=8) is None
    assert await store.stop_reasons([b.id]) == {b.id: "cancel"}
    assert await store.claim_shard(B, T0, T0 + 30) is None  # no new shards start
    assert await store.claim_finalization(B, T0 + 1, T0 + 31) is None  # s0 still running
    await store.release_shard(s0, A)
    fin = await store.claim_finalization(B, T0 + 2, T0 + 32)
    assert fin is not None and fin.status == "cancelling" and fin.finalizing_at is None
    assert await store.finish_batch(
        b.id,
        B,
        status="cancelled",
        files=[],
        output_file_id=None,
        error_file_id=None,
        unrun=25,
        now=11,
    )
    got = await store.get_batch(b.id, tenant="t")
    assert got is not None
    assert (got.status, got.cancelled_at, got.failed) == ("cancelled", 11, 25)
    # A finished batch stays as it is.
    again = await store.request_cancel(b.id, tenant="t", now=12)
    assert again is not None and again.status == "cancelled"


async def test_expiry(store: Store) -> None:
    b = await new_batch(store, expires_at=100)
    other = await new_batch(store, "batch_bbbbbbbbbbbb", expires_at=10_000)
    assert await store.request_expiry(99) == 0
    assert await store.request_expiry(100) == 1
    assert await store.request_expiry(101) == 0  # flagged once
    assert await store.stop_reasons([b.id, other.id]) == {b.id: "expire", other.id: None}
    # Validation still completes; then no shard runs and the batch finalizes at once.
    claimed = await store.claim_validation(A, T0, T0 + 30)
    assert claimed is not None and claimed.id == b.id
    await store.start_batch(b.id, A, total=10, model="m", shards=shards_for(b.id, 1), now=5)
    assert await store.claim_shard(A, T0, T0 + 30) is None
    fin = await store.claim_finalization(A, T0, T0 + 30)
    assert fin is not None and fin.id == b.id and fin.stop_reason == "expire"
    assert fin.status == "in_progress"
    assert await store.finish_batch(
        b.id,
        A,
        status="expired",
        files=[],
        output_file_id=None,
        error_file_id=None,
        unrun=10,
        now=200,
    )
    got = await store.get_batch(b.id, tenant="t")
    assert got is not None and (got.status, got.expired_at) == ("expired", 200)


async def test_purge_results(store: Store) -> None:
    b = await started(store)
    await store.record_results([row(b.id, 1)])
    await store.purge_results(b.id)
    assert await store.done_lines(b.id, 1, 100) == set()
    assert await store.claim_shard(A, T0, T0 + 30) is None


async def test_files_in_use_are_not_purged(store: Store) -> None:
    b = await started(store)
    assert await store.file_in_use(b.input_file_id)
    assert await store.delete_file(b.input_file_id, tenant="t", now=3)
    assert await store.get_file(b.input_file_id, tenant="t") is None
    assert await store.files_to_purge(10) == []
    await store.fail_batch(b.id, A, errors=[], total=0, model=None, now=4)  # not the holder
    assert await store.file_in_use(b.input_file_id)


async def test_results_arriving_after_finalization_began_are_dropped(store: Store) -> None:
    # A request abandoned at cancel time may still hand its row to the writer; once
    # finalization has claimed the batch such a row must neither land nor count.
    b = await started(store, n_shards=1)
    assert await store.record_results([row(b.id, 1)]) == 1
    await store.request_cancel(b.id, tenant="t", now=5)
    claimed = await store.claim_finalization(A, T0 + 100, T0 + 130)
    assert claimed is not None and claimed.id == b.id
    assert await store.record_results([row(b.id, 2), row(b.id, 3, ok=False)]) == 0
    after = await store.get_batch(b.id, tenant=None)
    assert after is not None
    assert (after.completed, after.failed) == (1, 0)
    assert [line for line, _, _ in [r async for r in store.iter_results(b.id)]] == [1]


async def test_one_group_commit_spanning_batches_counts_each_once(store: Store) -> None:
    # The writer commits rows of many batches together: each batch gets its own
    # counters and usage, and a batch that began finalizing drops its rows alone.
    a = await started(store, n_shards=1)
    b = await new_batch(store, "batch_bbbbbbbbbbbb")
    claimed = await store.claim_validation(A, T0, T0 + 30)
    assert claimed is not None and claimed.id == b.id
    await store.start_batch(b.id, A, total=10, model="m", shards=shards_for(b.id, 1), now=5)
    c = await new_batch(store, "batch_cccccccccccc")
    claimed = await store.claim_validation(A, T0, T0 + 30)
    assert claimed is not None and claimed.id == c.id
    await store.start_batch(c.id, A, total=10, model="m", shards=shards_for(c.id, 1), now=5)
    await store.request_cancel(c.id, tenant="t", now=6)
    fin = await store.claim_finalization(B, T0 + 1, T0 + 31)
    assert fin is not None and fin.id == c.id
    group = [
        row(a.id, 1, tokens=3),
        row(b.id, 1, tokens=5),
        row(a.id, 2, ok=False),
        row(c.id, 1, tokens=7),
        row(b.id, 2, tokens=11),
        row(a.id, 1, tokens=3),  # the same line twice in one group
    ]
    assert await store.record_results(group) == 4
    assert await store.record_results(group) == 0
    got = {x: await store.get_batch(x, tenant=None) for x in (a.id, b.id, c.id)}
    counts = {
        x: (r.completed, r.failed, r.usage.input_tokens, r.usage.total_tokens)
        for x, r in got.items()
        if r is not None
    }
    assert counts == {a.id: (1, 1, 3, 3), b.id: (2, 0, 16, 16), c.id: (0, 0, 0, 0)}
    assert [n async for n, _, _ in store.iter_results(a.id)] == [1, 2]
    assert [n async for n, _, _ in store.iter_results(c.id)] == []


async def test_results_read_back_in_line_order_across_pages(store: Store) -> None:
    b = await started(store, n_shards=1)
    lines = list(range(1, 5002))
    # Out of order and in several commits, as concurrent requests finish.
    for chunk in (lines[2500:], lines[:2500]):
        assert await store.record_results([row(b.id, n, ok=n % 7 != 0) for n in chunk]) == len(
            chunk
        )
    got = [(n, ok) async for n, ok, _ in store.iter_results(b.id)]
    assert got == [(n, n % 7 != 0) for n in lines]


async def test_records_read_back_field_for_field(store: Store) -> None:
    # Point reads take each dialect's fast path: JSON columns, nulls and the state
    # types must come back as they went in.
    f = FileRecord(
        id="file-bbbbbbbbbbbb",
        tenant="t",
        filename="in.jsonl",
        purpose="batch",
        bytes=10,
        created_at=1,
        expires_at=99,
    )
    await store.insert_file(f)
    assert await store.get_file(f.id, tenant="t") == f
    assert await store.get_file(f.id, tenant="other") is None
    rec = BatchRecord(
        id="batch_dddddddddddd",
        tenant="t",
        input_file_id=f.id,
        endpoint="/v1/embeddings",
        completion_window="24h",
        status=BatchStatus.VALIDATING,
        created_at=1,
        expires_at=2_000_000,
        metadata={"priority": "3", "note": "ünïcode"},
        output_expires_after=3600,
    )
    await store.insert_batch(rec)
    got = await store.get_batch(rec.id, tenant="t")
    assert got is not None
    assert got == dataclasses.replace(rec, priority=3)  # the priority comes from metadata
    assert isinstance(got.status, BatchStatus) and isinstance(got.phase, BatchPhase)
    assert await store.get_batch(rec.id, tenant="other") is None
    await store.claim_validation(A, T0, T0 + 30)
    errors = [{"code": "invalid_json", "message": "x", "param": None, "line": 2}]
    await store.fail_batch(rec.id, A, errors=errors, total=2, model=None, now=9)
    failed = await store.get_batch(rec.id, tenant=None)
    assert failed is not None
    assert (failed.errors, failed.status, failed.phase) == (errors, "failed", "done")
