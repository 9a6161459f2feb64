"""Per-backend concurrency: a shared ceiling, and an adaptive limit under it.

Two numbers bound the requests of one backend in this process:

- the **ceiling**: this worker's share of the backend's configured ``concurrency``.
  Live workers register with heartbeats and say which backends they are sending
  to (the ``workers`` table); the configured limit is divided among those workers
  (:func:`share_of`), so the limit holds across all workers together. A line takes
  a *slot* under the ceiling from its first try until its result is durable, which
  also bounds what a crash can make us re-send.
- the **window** (AIMD, as TCP does): how many tries may be at the upstream right
  now. It starts small and grows by one per success until the first 429 (slow
  start), then by one per window's worth of successes; a 429 halves it (once per
  round trip: only answers to tries sent after the last cut count), pauses new
  tries for the ``Retry-After`` the upstream asked for, and holds the window still
  for a moment (``HOLD_SECONDS``) so that several workers probing one upstream do
  not each bump into its limit every round trip. A rate-limited upstream is
  thus driven near its limit with a few 429s per cut, not storms of them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Iterable, Mapping

OVERLOAD_STATUS = frozenset({429})
INITIAL_WINDOW = 4.0
HOLD_SECONDS = 0.5
_RETRY_AFTER_CAP = 60.0


def share_of(limit: int, me: str, participants: Iterable[str]) -> int:
    """This worker's part of ``limit`` among ``participants`` (``me`` among them).

    Parts differ by at most one and sum to ``limit``; when there are more workers
    than the limit each still gets 1 (the limit is then exceeded, never starved).
    """
    everyone = sorted({*participants, me})
    n, rank = len(everyone), everyone.index(me)
    return max(1, limit // n + (1 if rank < limit % n else 0))


class _Gate:
    """A FIFO counting semaphore whose capacity may change while held, and which
    can be paused (no grants until a moment passes)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self.paused_until = 0.0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    async def acquire(self) -> None:
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
                self.held -= 1  # granted, then cancelled: hand the slot on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            self._grant()
            raise

    def release(self) -> None:
        self.held -= 1
        self._grant()

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    def _paused(self) -> bool:
        return time.monotonic() < self.paused_until

    def _grant(self) -> None:
        pause = self.paused_until - time.monotonic()
        if pause > 0:
            if self._waiters and self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(pause, self._resume)
            return
        while self._waiters and self.held < self.capacity:
            fut = self._waiters.popleft()
            if not fut.done():
                self.held += 1
                fut.set_result(None)

    def _resume(self) -> None:
        self._timer = None
        self._grant()


class BackendLimit:
    """Slots (the shared ceiling) and the adaptive send window of one backend."""

    def __init__(
        self, name: str, configured: int, *, ceiling: int | None = None, adaptive: bool = True
    ) -> None:
        self.name = name
        self.configured = configured
        self.ceiling = max(1, ceiling if ceiling is not None else configured)
        self.adaptive = adaptive
        self._slots = _Gate(self.ceiling)
        self.window = min(float(self.ceiling), INITIAL_WINDOW if adaptive else float(self.ceiling))
        self._threshold = float(self.ceiling)
        self._sends = _Gate(max(1, int(self.window)))
        self._epoch = 0
        self._hold_until = 0.0
        self.cuts = 0
        """Times the window was cut after a 429."""
        self.last_used = 0.0

    # ---------------------------------------------------------------- slots

    @property
    def busy(self) -> bool:
        return self._slots.held > 0

    async def acquire_slot(self) -> None:
        self.last_used = time.monotonic()
        await self._slots.acquire()

    def release_slot(self) -> None:
        self._slots.release()

    def set_ceiling(self, ceiling: int) -> None:
        ceiling = max(1, ceiling)
        if ceiling == self.ceiling:
            return
        grew = ceiling > self.ceiling
        self.ceiling = self._slots.capacity = ceiling
        if not self.adaptive and grew:
            self.window = float(ceiling)
        self.window = min(self.window, float(ceiling))
        self._threshold = min(max(self._threshold, self.window), float(ceiling))
        self._slots._grant()
        self._resize()

    # ---------------------------------------------------------------- sends

    async def acquire_send(self) -> int:
        """Wait for room in the window; returns a token for :meth:`release_send`."""
        await self._sends.acquire()
        return self._epoch

    def release_send(
        self, token: int, *, status: int | None, retry_after: float | None = None
    ) -> None:
        if self.adaptive:
            if status in OVERLOAD_STATUS:
                self._overloaded(token, retry_after)
            elif status is not None and status < 500:
                self._succeeded()
        self._sends.release()
        self._resize()

    def _succeeded(self) -> None:
        if time.monotonic() < self._hold_until:
            return
        if self.window < self._threshold:
            self.window += 1.0  # slow start: doubles every round trip
        else:
            self.window += 1.0 / self.window  # congestion avoidance: +1 per round trip
        self.window = min(self.window, float(self.ceiling))

    def _overloaded(self, token: int, retry_after: float | None) -> None:
        if retry_after:
            self._sends.pause(min(retry_after, _RETRY_AFTER_CAP))
        if token != self._epoch:
            return  # sent before the last cut: that congestion was already answered
        self._epoch += 1
        self.cuts += 1
        # Tries in flight when the upstream pushed back is what it could not take.
        self.window = max(1.0, min(self.window, float(self._sends.held)) / 2)
        self._threshold = self.window
        self._hold_until = time.monotonic() + max(HOLD_SECONDS, min(retry_after or 0, 5.0))

    def _resize(self) -> None:
        self._sends.capacity = max(1, int(self.window))
        self._sends._grant()


class Limits:
    """Every backend's :class:`BackendLimit` in this process."""

    def __init__(self, *, adaptive: bool = True, idle_after: float = 5.0) -> None:
        self._adaptive = adaptive
        self._idle_after = idle_after
        self._by_name: dict[str, BackendLimit] = {}
        self._shares: dict[str, list[str]] = {}
        self._me = ""

    def get(self, name: str, configured: int) -> BackendLimit:
        limit = self._by_name.get(name)
        if limit is None:
            # A backend not seen before: take our share at once, not at the next heartbeat.
            ceiling = share_of(configured, self._me, self._shares.get(name, []))
            limit = BackendLimit(name, configured, ceiling=ceiling, adaptive=self._adaptive)
            self._by_name[name] = limit
        return limit

    def active(self) -> list[str]:
        """Backends this process is sending to, or sent to a moment ago."""
        t = time.monotonic()
        return sorted(
            name
            for name, limit in self._by_name.items()
            if limit.busy or t - limit.last_used < self._idle_after
        )

    def apply(self, me: str, live: Mapping[str, Iterable[str]]) -> None:
        """Re-divide every backend's limit among the live workers sending to it."""
        self._me = me
        users: dict[str, list[str]] = {}
        for owner, backends in live.items():
            if owner != me:
                for name in backends:
                    users.setdefault(name, []).append(owner)
        self._shares = users
        for name, limit in self._by_name.items():
            limit.set_ceiling(share_of(limit.configured, me, users.get(name, [])))

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {
            name: {"ceiling": lim.ceiling, "window": round(lim.window, 2), "cuts": lim.cuts}
            for name, lim in self._by_name.items()
        }
