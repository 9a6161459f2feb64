"""The weighted fair gate (engine/fair.py): who gets the next unit, and the FIFO
gate's semantics it keeps (capacity changes, pauses, cancellation)."""

from __future__ import annotations

import asyncio
import collections

import pytest

from batchd.engine.fair import IDLE_KEPT, Claimant, FairGate

pytestmark = pytest.mark.anyio

A1 = Claimant("A", "a1")
A2 = Claimant("A", "a2")
B1 = Claimant("B", "b1")


class Queue:
    """Waiters on a gate, each recorded in ``granted`` once it holds a unit."""

    def __init__(self, gate: FairGate) -> None:
        self.gate = gate
        self.granted: list[Claimant] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def add(self, who: Claimant, n: int = 1) -> list[asyncio.Task[None]]:
        added = []
        for _ in range(n):
            task = asyncio.create_task(self._wait(who))
            await asyncio.sleep(0)  # queued in this order
            added.append(task)
        self.tasks += added
        return added

    async def _wait(self, who: Claimant) -> None:
        await self.gate.acquire(who)
        self.granted.append(who)

    async def release(self, who: Claimant) -> Claimant | None:
        """Give one unit of ``who`` back; returns whoever got it next."""
        before = len(self.granted)
        self.gate.release(who)
        await settle()
        assert len(self.granted) - before <= 1
        return self.granted[-1] if len(self.granted) > before else None


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def take(gate: FairGate, who: Claimant, n: int) -> None:
    for _ in range(n):
        await asyncio.wait_for(gate.acquire(who), 1)


async def test_one_tenant_one_batch_is_first_come_first_served() -> None:
    gate = FairGate(1)
    await take(gate, A1, 1)
    order: list[int] = []

    async def wait(i: int) -> None:
        await gate.acquire(A1)
        order.append(i)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(wait(i)))
        await asyncio.sleep(0)
    for _ in range(5):
        gate.release(A1)
        await settle()
    assert order == [0, 1, 2, 3, 4] and all(t.done() for t in tasks)
    assert gate.held == 1 and gate.waiting == 0


async def test_a_late_tenant_is_served_before_an_early_tenants_queue() -> None:
    gate = FairGate(4)
    await take(gate, A1, 4)
    q = Queue(gate)
    await q.add(A1, 20)  # the early key queued twenty
    await q.add(B1, 3)  # the late key three
    # Every unit A gives back goes to B until both hold two, then they alternate.
    got = [await q.release(A1) for _ in range(2)]
    assert got == [B1, B1]
    assert gate.held_by("A") == 2 and gate.held_by("B") == 2
    assert await q.release(A1) == A1  # A holds 1 < B's 2
    assert await q.release(B1) == B1  # B holds 1 < A's 2
    assert await q.release(B1) is not None  # B's queue is empty now: A's turn
    assert q.granted[-1] == A1
    assert gate.held_by("A") == 3 and gate.held_by("B") == 1


async def test_with_room_for_one_tenants_take_turns() -> None:
    # Whenever a unit frees everyone holds none: ties go to the tenant served longest
    # ago, so the early key's queue does not go first as a whole.
    gate = FairGate(1)
    await take(gate, A1, 1)
    q = Queue(gate)
    await q.add(A1, 4)
    await q.add(B1, 2)
    got = []
    holder = A1
    for _ in range(6):
        nxt = await q.release(holder)
        assert nxt is not None
        got.append(nxt.tenant)
        holder = nxt
    assert got == ["B", "A", "B", "A", "A", "A"]


async def test_equal_newcomers_go_in_arrival_order() -> None:
    gate = FairGate(1)
    await take(gate, Claimant("C", "c"), 1)
    q = Queue(gate)
    await q.add(B1)
    await q.add(A1)
    assert await q.release(Claimant("C", "c")) == B1  # neither served yet: B came first


async def test_weights_divide_the_capacity() -> None:
    weights = {"A": 3.0, "B": 1.0}
    gate = FairGate(8, weights.__getitem__)
    q = Queue(gate)
    await q.add(A1, 200)
    await q.add(B1, 200)
    await settle()
    assert (gate.held_by("A"), gate.held_by("B")) == (8, 0)  # A came first, alone
    # Release A's units one by one (as answers come back); what frees is re-divided.
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(40):
        heaviest = max(("A", "B"), key=lambda t: gate.held_by(t) / weights[t])
        got = await q.release(A1 if heaviest == "A" else B1)
        assert got is not None
        seen[got.tenant] += 1
    assert (gate.held_by("A"), gate.held_by("B")) == (6, 2)  # 3:1 of 8
    assert seen["B"] == 2 and seen["A"] == 38  # B got its two, then A got what A freed
    # A weight changed while running counts from the next grant on.
    weights["B"] = 3.0
    for _ in range(8):
        heaviest = max(("A", "B"), key=lambda t: gate.held_by(t) / weights[t])
        await q.release(A1 if heaviest == "A" else B1)
    assert (gate.held_by("A"), gate.held_by("B")) == (4, 4)
    for t in q.tasks:
        t.cancel()


async def test_priority_orders_batches_within_a_tenant_only() -> None:
    gate = FairGate(1)
    await take(gate, B1, 1)
    low, high = Claimant("A", "low", 0), Claimant("A", "high", 5)
    q = Queue(gate)
    await q.add(low, 2)
    await q.add(B1, 3)
    await q.add(high, 2)
    got = []
    holder = B1
    for _ in range(7):
        nxt = await q.release(holder)
        assert nxt is not None
        got.append(nxt)
        holder = nxt
    # Tenants alternate; inside A, the high-priority batch goes first although its
    # waiters came last; B's priority-0 work is never behind A's priority 5.
    assert got == [high, B1, high, B1, low, B1, low]


async def test_batches_within_a_tenant_share() -> None:
    gate = FairGate(3)
    await take(gate, A1, 3)
    q = Queue(gate)
    await q.add(A1, 3)
    await q.add(A2, 3)
    assert await q.release(A1) == A2  # a2 holds none, a1 two
    # From here both hold one whenever a unit frees: they take turns.
    assert await q.release(A1) == A1  # a1 was served longest ago
    assert await q.release(A1) == A2
    assert await q.release(A2) == A1
    assert await q.release(A1) == A2
    for t in q.tasks:
        t.cancel()


async def test_capacity_changes_while_held() -> None:
    gate = FairGate(1)
    await take(gate, A1, 1)
    q = Queue(gate)
    await q.add(A1, 4)
    gate.resize(3)
    await settle()
    assert len(q.granted) == 2 and gate.held == 3
    gate.resize(1)
    assert await q.release(A1) is None  # 2 held, capacity 1: nothing granted
    assert await q.release(A1) is None
    assert await q.release(A1) == A1  # 0 held: the next waiter gets one
    assert gate.held == 1 and gate.waiting == 1


async def test_a_cancelled_waiter_is_skipped_and_its_unit_goes_on() -> None:
    gate = FairGate(1)
    await take(gate, A1, 1)
    q = Queue(gate)
    first, second = await q.add(B1, 2)
    first.cancel()
    await settle()
    assert first.cancelled()
    assert await q.release(A1) == B1
    assert second.done() and gate.held == 1 and gate.waiting == 0
    # Granted, then cancelled before it ran: the unit is handed on, not lost.
    third, fourth = await q.add(A1, 2)
    gate.release(B1)  # grants the unit to third ...
    third.cancel()  # ... which is cancelled before it resumes
    await settle()
    assert third.cancelled() and fourth.done()
    assert gate.held == 1 and gate.held_by("A") == 1 and gate.held_by("B") == 0


async def test_a_paused_gate_grants_nothing_until_the_pause_ends() -> None:
    gate = FairGate(2)
    gate.pause(0.2)
    q = Queue(gate)
    (task,) = await q.add(A1)
    await asyncio.sleep(0.05)
    assert not task.done()  # room for two, but paused
    await asyncio.wait_for(task, 5)
    assert gate.held == 1


async def test_bookkeeping_of_batches_that_came_and_went_is_bounded() -> None:
    gate = FairGate(2)
    q = Queue(gate)
    await q.add(A1, 3)
    await q.add(B1, 3)
    (cancelled,) = await q.add(A2)
    cancelled.cancel()
    await settle()
    while gate.held:
        holder = q.granted.pop(0)
        gate.release(holder)
        await settle()
    assert gate.held == 0 and gate.waiting == 0
    # A hundred batches more, one request each: at most IDLE_KEPT stay remembered.
    for i in range(100):
        who = Claimant(f"T{i % 7}", f"b{i}")
        await take(gate, who, 1)
        gate.release(who)
    batches = sum(len(t.batches) for t in gate._tenants.values())
    assert batches <= IDLE_KEPT + 1, batches
    assert all(
        b.held == 0 and not b.queue for t in gate._tenants.values() for b in t.batches.values()
    )
