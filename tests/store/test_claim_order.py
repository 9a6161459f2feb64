"""Which shard a worker claims next (store/fair_order.py), on every store: fair
between tenants (API keys), by weight, priority within a tenant only, counted across
workers; and what a worker at capacity may still claim."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from batchd.store.base import Store
from batchd.store.records import BatchRecord, FileRecord, ShardRecord

pytestmark = pytest.mark.anyio

W1, W2 = "host:1:w1", "host:2:w2"
T0 = 1_000_000.0
UNTIL = T0 + 30


async def running_batches(
    store: Store, *specs: tuple[str, str, int, int], model: str = "m"
) -> None:
    """``(batch id, tenant, priority, shards)`` each, created in this order and run."""
    for batch_id, tenant, priority, _ in specs:
        file_id = f"file-{batch_id}"
        await store.insert_file(
            FileRecord(
                id=file_id, tenant=tenant, filename="in.jsonl", purpose="batch", bytes=1,
                created_at=1,
            )
        )  # fmt: skip
        await store.insert_batch(
            BatchRecord(
                id=batch_id, tenant=tenant, input_file_id=file_id,
                endpoint="/v1/chat/completions", completion_window="24h", status="validating",
                created_at=1, expires_at=2_000_000,
                metadata={"priority": str(priority)} if priority else None,
            )
        )  # fmt: skip
    shards = {batch_id: n for batch_id, _, _, n in specs}
    while (b := await store.claim_validation(W1, T0, UNTIL)) is not None:
        parts = [ShardRecord(b.id, i, i, i + 1, i + 1, i + 1, 1) for i in range(shards[b.id])]
        await store.start_batch(b.id, W1, total=len(parts), model=model, shards=parts, now=1)


async def claims(store: Store, owner: str, n: int, **kwargs: object) -> list[str]:
    """The batches of ``n`` successive claims by ``owner`` (none completes)."""
    got = []
    for _ in range(n):
        shard = await store.claim_shard(owner, T0, UNTIL, **kwargs)  # type: ignore[arg-type]
        assert shard is not None
        got.append(shard.batch_id)
    return got


async def test_a_late_tenant_alternates_with_an_early_tenants_queue(store: Store) -> None:
    await running_batches(
        store, ("a1", "A", 0, 4), ("a2", "A", 0, 4), ("a3", "A", 0, 4), ("b1", "B", 0, 3)
    )
    got = await claims(store, W1, 10)
    # B's one batch gets every other shard although A's three came first; A's batches
    # take turns among themselves; once B has nothing left, A gets the rest.
    assert got == ["a1", "b1", "a2", "b1", "a3", "b1", "a1", "a2", "a3", "a1"]


async def test_priority_orders_the_batches_of_one_tenant_only(store: Store) -> None:
    await running_batches(store, ("low", "A", 0, 2), ("b1", "B", 0, 3), ("high", "A", 5, 2))
    got = await claims(store, W1, 7)
    # Within A, high goes first although it came last; B is never behind A's priority.
    assert got == ["high", "b1", "high", "b1", "low", "b1", "low"]


async def test_weights_divide_the_shards(store: Store) -> None:
    await running_batches(store, ("a1", "A", 0, 20), ("b1", "B", 0, 20))
    weights = {"A": 3.0, "B": 1.0}
    got = await claims(store, W1, 8, weight_of=weights.__getitem__)
    assert Counter(got) == {"a1": 6, "b1": 2}
    # Weights are read at each claim: from equal weights on, the split evens out.
    weights["A"] = 1.0
    got = await claims(store, W1, 4, weight_of=weights.__getitem__)
    assert Counter(got) == {"b1": 4}  # 6 vs 2 running: B catches up


async def test_running_shards_count_on_every_worker(store: Store) -> None:
    await running_batches(store, ("a1", "A", 0, 4), ("b1", "B", 0, 4))
    assert await claims(store, W1, 2) == ["a1", "b1"]
    assert await claims(store, W2, 1) == ["a1"]  # A and B run one each (on W1): A is older
    assert await claims(store, W2, 1) == ["b1"]  # A runs two, on W1 and W2
    # Leases that lapsed are not running: at T0 + 31 nothing is, so A goes first again.
    shard = await store.claim_shard(W2, T0 + 31, T0 + 61)
    assert shard is not None and shard.batch_id == "a1"


async def test_a_tenant_spreads_over_the_workers(store: Store) -> None:
    await running_batches(store, ("a1", "A", 0, 8), ("b1", "B", 0, 4))
    assert await claims(store, W2, 1) == ["a1"]
    # W1 has room for several: it takes B's first piece, but not a second while W2
    # (which runs A) runs none of B: W2's share of the backend is divided only
    # between the keys that have work on W2.
    assert await claims(store, W1, 3) == ["b1", "a1", "a1"]
    got = await store.claim_shard(W2, T0, UNTIL, newcomers_only=True)
    assert got is not None and got.batch_id == "b1"  # W2, at capacity, takes B's piece
    assert await claims(store, W1, 1) == ["b1"]  # now on both: B runs least again


async def test_spreading_never_leaves_a_shard_unclaimed(store: Store) -> None:
    await running_batches(store, ("a1", "A", 0, 1), ("b1", "B", 0, 3))
    assert await claims(store, W2, 1) == ["a1"]
    # W2 runs none of B, but W1 has nothing else to claim: it takes B's pieces.
    assert await claims(store, W1, 3) == ["b1", "b1", "b1"]


async def test_finished_shards_stop_counting(store: Store) -> None:
    await running_batches(store, ("a1", "A", 0, 4), ("b1", "B", 0, 4))
    first = await store.claim_shard(W1, T0, UNTIL)
    assert first is not None and first.batch_id == "a1"
    assert await store.complete_shard(first, W1)
    nxt = await store.claim_shard(W1, T0, UNTIL)
    assert nxt is not None and nxt.batch_id == "a1"  # A runs none again: ties go to age


async def test_at_capacity_only_newcomer_batches_and_tenants(store: Store) -> None:
    await running_batches(store, ("a1", "A", 0, 4), ("b1", "B", 0, 4), ("a2", "A", 0, 4))
    assert await claims(store, W2, 1) == ["a1"]
    assert await claims(store, W1, 2) == ["b1", "a2"]
    # W1 is at capacity. A newcomer claim takes a batch with nothing running anywhere
    # or a tenant with nothing running on W1: A runs a1 on W2 and a2 on W1, B runs b1
    # on W1, so there is none.
    assert await store.claim_shard(W1, T0, UNTIL, newcomers_only=True) is None
    # W2 runs only A: B is a newcomer there although b1 runs on W1.
    got = await store.claim_shard(W2, T0, UNTIL, newcomers_only=True)
    assert got is not None and got.batch_id == "b1"
    await running_batches(store, ("a3", "A", 0, 1))
    got = await store.claim_shard(W1, T0, UNTIL, newcomers_only=True)
    assert got is not None and got.batch_id == "a3"  # a new batch of a tenant W1 runs


async def test_past_the_newcomer_places_only_tenants_new_to_the_worker(store: Store) -> None:
    await running_batches(store, ("a1", "A", 0, 2), ("a2", "A", 0, 2), ("b1", "B", 0, 2))
    assert await claims(store, W1, 1) == ["a1"]
    # A's second batch has nothing running: a newcomer claim would take it, but a
    # new-tenant claim (a worker whose newcomer places A's batches filled) skips A.
    got = await store.claim_shard(W1, T0, UNTIL, new_tenants_only=True)
    assert got is not None and got.batch_id == "b1"
    assert await store.claim_shard(W1, T0, UNTIL, new_tenants_only=True) is None
    # On W2 nothing runs yet: every tenant is new there.
    got = await store.claim_shard(W2, T0, UNTIL, new_tenants_only=True)
    assert got is not None and got.batch_id == "a2"


async def test_a_worker_claims_only_the_models_it_may_run(store: Store) -> None:
    await running_batches(store, ("a1", "A", 0, 2))
    await running_batches(store, ("b1", "B", 0, 2), model="other")
    got = await claims(store, W1, 2, can_run=lambda model: model == "m")
    assert got == ["a1", "a1"]
    assert await store.claim_shard(W1, T0, UNTIL, can_run=lambda model: model == "m") is None
    got = await claims(store, W1, 2)
    assert got == ["b1", "b1"]


async def test_concurrent_claims_never_take_a_shard_twice(store: Store) -> None:
    await running_batches(
        store, ("a1", "A", 0, 5), ("a2", "A", 3, 5), ("b1", "B", 0, 5), ("c1", "C", 0, 5)
    )
    owners = [f"host:{i}:w{i}" for i in range(4)]
    got = await asyncio.gather(*(store.claim_shard(owners[i % 4], T0, UNTIL) for i in range(20)))
    assert None not in got
    keys = [(s.batch_id, s.shard_no) for s in got if s is not None]
    assert len(set(keys)) == 20  # every shard once (PostgreSQL: SKIP LOCKED, in parallel)
    assert await store.claim_shard(owners[0], T0, UNTIL) is None
