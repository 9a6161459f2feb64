"""A weighted fair gate: a counting semaphore whose capacity is shared between tenants.

Each API key is a tenant. A FIFO gate grants in arrival order, so a key that queued
240 lines first keeps a backend busy until they have all run, and a key that
arrives a second later waits behind them. This gate grants instead, each time a
unit frees, to

1. the tenant with the fewest units held per weight, among tenants with waiters;
2. within it, the batch with the highest priority (``metadata.priority``);
3. among those, the batch holding the fewest units;
4. within the batch, the oldest waiter.

Ties (in 1 and 3) go to whoever was granted a unit longest ago (a newcomer first),
then to the oldest waiter. Held counts alone cannot separate tenants when the
capacity is 1 (a send limit cut down by 429s): everyone holds nothing whenever a
unit frees, and "oldest waiter" would then serve the early key's whole queue
first; taking turns keeps the split even at any capacity.

So a backend's capacity is divided evenly between the keys that have work on it
(by weight when set), then among each key's batches. Only *waiters* compete: a
tenant with nothing queued takes nothing from the others, and capacity never
stays idle while anyone waits. Weights are read at grant time, so a weight
changed while a batch runs applies to the next grant.

The gate is on the hot path (a slot and a send per request), so the uncontended
case is a few counter updates, and one tenant with one batch walks no lists.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from typing import NamedTuple

from batchd.store.fair_order import MIN_WEIGHT as MIN_WEIGHT
from batchd.store.fair_order import WeightOf as WeightOf

IDLE_KEPT = 16
"""Idle batches whose bookkeeping a gate keeps before sweeping them all away."""


class Claimant(NamedTuple):
    """Who a unit is for: the class a waiter is queued under."""

    tenant: str
    batch_id: str
    priority: int = 0


ANYONE = Claimant("", "")
"""The class of untagged acquisitions (tests, tools): they all share one tenant."""


def equal_weights(tenant: str) -> float:
    return 1.0


class _Batch:
    __slots__ = ("held", "idle", "last", "priority", "queue")

    def __init__(self, priority: int) -> None:
        self.held = 0
        self.idle = False
        """Listed among the gate's idle batches (see :meth:`FairGate._went_idle`)."""
        self.last = 0
        """The gate's grant number when this batch last got a unit (0: never)."""
        self.priority = priority
        # (arrival number, future). Cancelled futures stay until a grant pops them,
        # so cancelling a waiter is O(1); counts include them until then.
        self.queue: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()


class _Tenant:
    __slots__ = ("batches", "held", "last", "waiting")

    def __init__(self) -> None:
        self.held = 0
        self.last = 0
        self.waiting = 0
        self.batches: dict[str, _Batch] = {}

    def oldest(self) -> int:
        return min(b.queue[0][0] for b in self.batches.values() if b.queue)

    def pick(self) -> tuple[str, _Batch]:
        """Its batch with waiters of the highest priority, then holding the fewest,
        then served longest ago, then whose waiter came first."""
        best: tuple[str, _Batch] | None = None
        for item in self.batches.items():
            b = item[1]
            if not b.queue:
                continue
            if best is None:
                best = item
                continue
            top = best[1]
            if b.priority != top.priority:
                if b.priority > top.priority:
                    best = item
            elif b.held != top.held:
                if b.held < top.held:
                    best = item
            elif b.last != top.last:
                if b.last < top.last:
                    best = item
            elif b.queue[0][0] < top.queue[0][0]:
                best = item
        assert best is not None  # the tenant has waiters
        return best


class FairGate:
    """A weighted fair counting semaphore whose capacity may change while held, and
    which can be paused (no grants until a moment passes)."""

    def __init__(self, capacity: int, weight_of: WeightOf | None = None) -> None:
        self.capacity = capacity
        self.held = 0
        self.waiting = 0
        self.paused_until = 0.0
        self._weight_of = weight_of or equal_weights
        self._tenants: dict[str, _Tenant] = {}
        self._idle: list[tuple[str, str]] = []
        self._arrivals = itertools.count()
        self._grants = 0
        self._timer: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- public

    async def acquire(self, who: Claimant = ANYONE) -> None:
        if not self.waiting and self.held < self.capacity and not self._paused():
            # The fast path, inlined: this runs twice per request.
            name, batch_id, priority = who
            tenant = self._tenants.get(name)
            if tenant is None:
                tenant = self._tenants[name] = _Tenant()
            batch = tenant.batches.get(batch_id)
            if batch is None:
                batch = tenant.batches[batch_id] = _Batch(priority)
            self.held += 1
            tenant.held += 1
            batch.held += 1
            self._grants = tenant.last = batch.last = self._grants + 1
            return
        tenant, batch = self._entry(who)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        batch.queue.append((next(self._arrivals), fut))
        tenant.waiting += 1
        self.waiting += 1
        self._grant()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(who)  # granted, then cancelled: hand the unit on
            else:
                fut.cancel()  # still queued: the next grant drops it
                self._grant()
            raise

    def release(self, who: Claimant = ANYONE) -> None:
        """Give back a unit acquired for ``who``."""
        name, batch_id, _ = who
        tenant = self._tenants[name]
        batch = tenant.batches[batch_id]
        self.held -= 1
        tenant.held -= 1
        batch.held -= 1
        if not batch.held and not batch.queue and not batch.idle:
            self._went_idle(name, batch_id, batch)
        if self.waiting:
            self._grant()

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self._grant()

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    def tenants_with_work(self) -> list[str]:
        """Tenants holding or waiting for a unit, sorted."""
        return sorted(n for n, t in self._tenants.items() if t.held or t.waiting)

    def held_by(self, tenant: str) -> int:
        t = self._tenants.get(tenant)
        return t.held if t is not None else 0

    # --------------------------------------------------------------- private

    def _paused(self) -> bool:
        if not self.paused_until:
            return False
        if time.monotonic() < self.paused_until:
            return True
        self.paused_until = 0.0  # over: no clock reads until the next pause
        return False

    def _entry(self, who: Claimant) -> tuple[_Tenant, _Batch]:
        name, batch_id, priority = who
        tenant = self._tenants.get(name)
        if tenant is None:
            tenant = self._tenants[name] = _Tenant()
        batch = tenant.batches.get(batch_id)
        if batch is None:
            batch = tenant.batches[batch_id] = _Batch(priority)
        return tenant, batch

    def _count(self, tenant: _Tenant, batch: _Batch) -> None:
        self.held += 1
        tenant.held += 1
        batch.held += 1
        self._grants = tenant.last = batch.last = self._grants + 1

    def _went_idle(self, name: str, batch_id: str, batch: _Batch) -> None:
        """A batch holds and awaits nothing. Its bookkeeping stays for a while (its
        next request usually follows at once) and goes in a sweep once
        :data:`IDLE_KEPT` batches are idle (batches come and go)."""
        batch.idle = True
        self._idle.append((name, batch_id))
        if len(self._idle) > IDLE_KEPT:
            for tenant_name, idle_id in self._idle:
                tenant = self._tenants[tenant_name]
                b = tenant.batches[idle_id]
                b.idle = False
                if not b.held and not b.queue:
                    del tenant.batches[idle_id]
                    if not tenant.batches:
                        del self._tenants[tenant_name]
            self._idle.clear()

    def _grant(self) -> None:
        if not self.waiting:
            return
        if self.paused_until:
            pause = self.paused_until - time.monotonic()
            if pause > 0:
                if self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(pause, self._resume)
                return
        tenants = self._tenants
        while self.waiting and self.held < self.capacity:
            if len(tenants) == 1:  # one tenant, one batch: nothing to choose
                ((name, tenant),) = tenants.items()
            else:
                name, tenant = self._pick()
            if len(tenant.batches) == 1:
                ((batch_id, batch),) = tenant.batches.items()
            else:
                batch_id, batch = tenant.pick()
            _, fut = batch.queue.popleft()
            tenant.waiting -= 1
            self.waiting -= 1
            if fut.done():  # cancelled while queued
                if not batch.held and not batch.queue and not batch.idle:
                    self._went_idle(name, batch_id, batch)
                continue
            self._count(tenant, batch)
            fut.set_result(None)

    def _pick(self) -> tuple[str, _Tenant]:
        """The tenant with waiters holding the fewest units per weight; ties: the one
        served longest ago, then the one whose waiter came first."""
        weight_of = self._weight_of
        best: tuple[str, _Tenant] | None = None
        best_share = 0.0
        for name, tenant in self._tenants.items():
            if not tenant.waiting:
                continue
            share = tenant.held / max(weight_of(name), MIN_WEIGHT)
            if best is not None:
                top = best[1]
                if share > best_share:
                    continue
                if share == best_share:
                    if tenant.last > top.last:
                        continue
                    if tenant.last == top.last and tenant.oldest() > top.oldest():
                        continue
            best, best_share = (name, tenant), share
        assert best is not None  # someone waits
        return best

    def _resume(self) -> None:
        self._timer = None
        self._grant()
