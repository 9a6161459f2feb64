"""Micro-benchmark: the weighted fair gate (engine/fair.py) against the FIFO gate it
replaced, on the hot path (one slot and one send per request, ~3,000 requests/s).

Cases, each timed as microseconds per acquire + release, the two gates alternated
``--rounds`` times and the median kept (the machine is shared):

- ``uncontended``: capacity to spare, one task acquiring and releasing;
- ``one key``: 256 tasks on a capacity of 64 (most acquisitions wait), one tenant and
  one batch: the common case, which must cost about what the FIFO gate cost;
- ``2 keys x 8 batches``: the same with the tasks spread over 16 classes (the FIFO
  gate ignores them; the fair gate picks a tenant and a batch at every grant).

    .venv/bin/python bench/bench_gate.py
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

from batchd.engine.fair import Claimant, FairGate


class FifoGate:
    """The FIFO gate of engine/limits.py before the fair gate (the baseline)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self.paused_until = 0.0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    async def acquire(self, who: Claimant | None = None) -> None:
        if not self._waiters and self.held < self.capacity and not self._paused():
            self.held += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._grant()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.held -= 1
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            self._grant()
            raise

    def release(self, who: Claimant | None = None) -> None:
        self.held -= 1
        self._grant()

    def _paused(self) -> bool:
        return time.monotonic() < self.paused_until

    def _grant(self) -> None:
        pause = self.paused_until - time.monotonic()
        if pause > 0:
            return
        while self._waiters and self.held < self.capacity:
            fut = self._waiters.popleft()
            if not fut.done():
                self.held += 1
                fut.set_result(None)


async def uncontended(gate: Any, n: int, classes: list[Claimant]) -> float:
    who = classes[0]
    t0 = time.perf_counter()
    for _ in range(n):
        await gate.acquire(who)
        gate.release(who)
    return time.perf_counter() - t0


async def contended(gate: Any, n: int, classes: list[Claimant]) -> float:
    tasks, per = 256, n // 256

    async def run(who: Claimant) -> None:
        for _ in range(per):
            await gate.acquire(who)
            await asyncio.sleep(0)  # the request: give the others a turn
            gate.release(who)

    t0 = time.perf_counter()
    await asyncio.gather(*(run(classes[i % len(classes)]) for i in range(tasks)))
    return time.perf_counter() - t0


async def sleeps_only(n: int) -> float:
    """What ``contended`` spends outside the gate (the tasks and their sleeps)."""
    tasks, per = 256, n // 256

    async def run() -> None:
        for _ in range(per):
            await asyncio.sleep(0)

    t0 = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(tasks)))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="acquisitions per case")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    one = [Claimant("t" * 32, "batch_a")]
    many = [Claimant(f"{k:032x}", f"batch_{k}_{b}", b % 2) for k in range(2) for b in range(8)]
    cases: list[tuple[str, Callable[..., Any], int, list[Claimant]]] = [
        ("uncontended", uncontended, 1 << 20, one),
        ("one key", contended, 64, one),
        ("2 keys x 8 batches", contended, 64, many),
    ]
    print(f"{'case':<22}{'FIFO µs':>10}{'fair µs':>10}{'ratio':>8}")
    for name, case, capacity, classes in cases:
        fifo: list[float] = []
        fair: list[float] = []
        base: list[float] = []
        for _ in range(args.rounds):
            fifo.append(asyncio.run(case(FifoGate(capacity), args.n, classes)))
            fair.append(asyncio.run(case(FairGate(capacity), args.n, classes)))
            if case is contended:
                base.append(asyncio.run(sleeps_only(args.n)))
        outside = statistics.median(base) if base else 0.0
        f = (statistics.median(fifo) - outside) / args.n * 1e6
        g = (statistics.median(fair) - outside) / args.n * 1e6
        print(f"{name:<22}{f:>10.2f}{g:>10.2f}{g / f:>8.2f}")
    if base:
        print(f"(contended cases: {outside / args.n * 1e6:.2f} µs of task switching subtracted)")


if __name__ == "__main__":
    main()
