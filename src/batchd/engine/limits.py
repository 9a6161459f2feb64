"""Per-backend concurrency: a shared ceiling, and a capacity-seeking limit under it.

Two numbers bound the requests of one backend in this process:

- the **ceiling**: this worker's share of the backend's configured ``concurrency``
  (default 1024: a ceiling, not a target). Live workers register with heartbeats
  and say which backends they are sending to, for which keys, and the slots they
  hold (the ``workers`` table); the configured limit is divided among those workers
  by demand (:func:`weighted_share_of`), and a part grows only into what the others
  do not hold (:class:`Limits`), so the limit holds across all workers together at
  every moment. A line takes a *slot* under the ceiling from
  its first try until its result is durable, which also bounds what a crash can
  make us re-send.
- the **limit** (:class:`~batchd.engine.capacity.Controller`): how many tries may
  be at the upstream right now. It seeks the server's knee (where more in flight
  stops adding throughput) from answer timings, or from the server's load gauges
  when it publishes them (polled every :data:`LOAD_INTERVAL` while we send), cuts
  on 429 and honours ``Retry-After``; in background mode it only takes what others
  leave free.

Slots and sends both go through a :class:`~batchd.engine.fair.FairGate`: what frees
goes to the tenant (API key) holding the least per weight, then by priority among
its batches, so one key's early queue never holds a backend for another key's
later batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from batchd.engine.capacity import Controller
from batchd.engine.fair import ANYONE, MIN_WEIGHT, Claimant, FairGate, WeightOf, equal_weights
from batchd.engine.tries import Ticket, completion_tokens
from batchd.store.records import BackendUse

LOAD_INTERVAL = 0.2
"""Seconds between reads of a server's load gauges."""
LOAD_IDLE_AFTER = 5.0
RAMP_TICK = 0.005


def share_of(limit: int, me: str, participants: Iterable[str]) -> int:
    """This worker's part of ``limit`` among ``participants`` (``me`` among them).

    Parts differ by at most one and sum to ``limit``; when there are more workers
    than the limit each still gets 1 (the limit is then exceeded, never starved).
    """
    everyone = sorted({*participants, me})
    n, rank = len(everyone), everyone.index(me)
    return max(1, limit // n + (1 if rank < limit % n else 0))


def weighted_share_of(limit: int, me: str, demands: Mapping[str, float]) -> int:
    """This worker's part of ``limit`` in proportion to each worker's ``demands`` (``me``
    among them): largest remainders, so the parts sum to ``limit``; ties by name. Every
    worker still gets 1 (the limit is then exceeded, never starved)."""
    total = sum(demands.values())
    if total <= 0 or me not in demands:
        return share_of(limit, me, demands)
    exact = {owner: limit * d / total for owner, d in demands.items()}
    parts = {owner: int(x) for owner, x in exact.items()}
    left = limit - sum(parts.values())
    by_remainder = sorted(exact, key=lambda o: (parts[o] - exact[o], o))
    for owner in by_remainder[:left]:
        parts[owner] += 1
    return max(1, parts[me])


Registry = Mapping[str, Mapping[str, BackendUse]]
"""Live workers as the registry lists them: per worker, the backends it sends to, each
with the tenants (API keys) it has work for there and the slots it may hold."""


def demands(
    workers: Mapping[str, Sequence[str]], weight_of: WeightOf
) -> tuple[dict[str, float], dict[str, int]]:
    """For one backend: each worker's demand, and on how many workers each tenant has work.

    ``workers``: the workers sending to it, each with the tenants it has work for there.
    A tenant with work on ``k`` workers counts ``weight / k`` on each, and a worker's
    demand is the sum over its tenants (one that names none counts as one tenant of
    weight 1). Dividing the backend's limit by demand, and each worker's part among its
    tenants by ``weight / k``, gives every tenant its weighted share of the whole limit
    wherever its shards run.
    """
    spread: dict[str, int] = {}
    for tenants in workers.values():
        for t in tenants:
            spread[t] = spread.get(t, 0) + 1
    demand = {
        owner: sum(max(weight_of(t), MIN_WEIGHT) / spread[t] for t in tenants) if tenants else 1.0
        for owner, tenants in workers.items()
    }
    return demand, spread


LoadProbe = Callable[[], Awaitable["tuple[int, int] | None"]]
"""Reads a server's ``(running, waiting)`` gauges; None when it publishes none."""


class BackendLimit:
    """Slots (the shared ceiling) and the capacity-seeking send limit of one backend."""

    def __init__(
        self,
        name: str,
        configured: int,
        *,
        ceiling: int | None = None,
        adaptive: bool = True,
        background: bool = False,
        slowdown: float = 1.5,
        probe: LoadProbe | None = None,
        weight_of: WeightOf | None = None,
    ) -> None:
        self.name = name
        self.configured = configured
        self.ceiling = max(0, ceiling if ceiling is not None else configured)
        """Slots this worker may hold: 0 until the registry grants it a part."""
        self.target = self.ceiling
        """The part it should have; more than ``ceiling`` while others still hold it."""
        self.adaptive = adaptive
        self.control = Controller(
            max(1, self.ceiling), adaptive=adaptive, background=background, slowdown=slowdown
        )
        self.on_change: Callable[[], None] | None = None
        """Called when the registry should hear from us soon: a line waits for a first
        grant, or slots held above a cut ceiling have drained to it."""
        base = weight_of or equal_weights
        self._spread: Mapping[str, int] = {}
        """On how many workers each tenant has work here (see :func:`demands`)."""

        def share_weight(tenant: str) -> float:
            # A tenant whose work also runs elsewhere gets that part of its weight here.
            return base(tenant) / self._spread.get(tenant, 1)

        self._slots = FairGate(self.ceiling, share_weight)
        self._sends = FairGate(max(1, int(self.control.window)), share_weight)
        self._probe = probe
        self._poller: asyncio.Task[None] | None = None
        self._ramping: asyncio.TimerHandle | None = None
        self.last_used = 0.0

    @property
    def window(self) -> float:
        """The current send limit (tries at the upstream at once)."""
        return self.control.limit

    @property
    def cuts(self) -> int:
        """Times the limit was cut after a 429."""
        return self.control.cuts

    # ---------------------------------------------------------------- slots

    @property
    def busy(self) -> bool:
        """Lines hold slots here, or wait for one (for a grant, perhaps)."""
        return self._slots.held > 0 or self._slots.waiting > 0

    async def acquire_slot(self, who: Claimant = ANYONE) -> None:
        self.last_used = time.monotonic()
        if self._probe is not None and self.adaptive and self._poller is None:
            self._poller = asyncio.create_task(self._poll(self._probe), name=f"load {self.name}")
        if self._slots.held >= self.ceiling and self.target > self.ceiling:
            self._changed()  # waiting on a grant: ask for it now
        await self._slots.acquire(who)

    def release_slot(self, who: Claimant = ANYONE) -> None:
        self._slots.release(who)
        if self._slots.held == self.ceiling:
            # Only a cut ceiling has slots held above it, so this one was the last of
            # those: what we hold is down to our part, and others may grow now.
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def holds(self) -> int:
        """Slots we may hold: our ceiling, or what is still held above a ceiling cut."""
        return max(self.ceiling, self._slots.held)

    def usage(self) -> BackendUse:
        """What the registry hears from us about this backend."""
        return BackendUse(keys=self.tenants(), holds=self.holds())

    def tenants(self) -> list[str]:
        """Tenants with lines here: holding a slot or waiting for one."""
        return self._slots.tenants_with_work()

    def set_spread(self, spread: Mapping[str, int]) -> None:
        """On how many workers each tenant has work here (from the registry)."""
        self._spread = spread

    def set_ceiling(self, ceiling: int) -> None:
        ceiling = max(0, ceiling)
        if ceiling == self.ceiling:
            return
        self.ceiling = ceiling
        self.control.set_ceiling(max(1, ceiling))
        self._slots.resize(ceiling)
        self._resize()

    # ---------------------------------------------------------------- sends

    async def acquire_send(self, who: Claimant = ANYONE) -> Ticket:
        """Wait for room under the limit; returns a ticket for :meth:`release_send`
        (with the same ``who``)."""
        await self._sends.acquire(who)
        return self.control.send()

    def release_send(
        self,
        token: Ticket,
        *,
        who: Claimant = ANYONE,
        status: int | None,
        retry_after: float | None = None,
        body: bytes | None = None,
    ) -> None:
        tokens = completion_tokens(body) if body is not None and status == 200 else None
        self.control.done(token, status=status, retry_after=retry_after, tokens=tokens)
        pause = self.control.paused_until - time.monotonic()
        if pause > 0:
            self._sends.pause(pause)
        self._sends.release(who)
        self._resize()

    def _resize(self) -> None:
        window = self.control.window
        self._sends.resize(max(1, int(window)))
        if window < self.control.limit and self._ramping is None:
            # A raise spread over time: let the gate grow again in a moment.
            self._ramping = asyncio.get_running_loop().call_later(RAMP_TICK, self._ramp)

    def _ramp(self) -> None:
        self._ramping = None
        self._resize()

    # ----------------------------------------------------------------- load

    async def _poll(self, probe: LoadProbe) -> None:
        """Read the server's load while we send to it; stop when it publishes none."""
        try:
            while self.busy or time.monotonic() - self.last_used < LOAD_IDLE_AFTER:
                try:
                    load = await probe()
                except Exception:  # a probe bug must not stop the batch: timings only
                    load = None
                if load is None:
                    self._probe = None  # nothing published there: timings only, no more asking
                    return
                self.control.on_load(*load)
                self._resize()
                await asyncio.sleep(LOAD_INTERVAL)
        finally:
            self._poller = None

    def snapshot(self) -> dict[str, Any]:
        c = self.control
        return {
            "ceiling": self.ceiling,
            "limit": round(c.limit, 2),
            "in_flight": c.in_flight,
            "server_queue": round(c.queue_estimate, 2),
            "server_running": c.server_running if c.load_known else None,
            "phase": c.phase,
            "source": "metrics" if c.load_known else "timings",
            "cuts": c.cuts,
        }


class Limits:
    """Every backend's :class:`BackendLimit` in this process.

    Parts of a backend's limit are granted through the registry, so that the workers
    sending to it never hold more slots together than its ``concurrency``, whatever
    order they see each other in: a part shrinks at once, but grows only into what
    the others do not hold, decided in the same step that reads what they hold
    (``register_worker`` in store/base.py). A backend this process has not used
    before gets no slot until that step has run (``on_change`` asks for it at once),
    and one it stops using gives its part back after ``idle_after`` seconds."""

    def __init__(
        self,
        *,
        adaptive: bool = True,
        idle_after: float = 5.0,
        weight_of: WeightOf | None = None,
        siblings: int = 1,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._adaptive = adaptive
        self._weight_of = weight_of
        self._idle_after = idle_after
        self._siblings = max(1, siblings)
        self._on_change = on_change
        self._by_name: dict[str, BackendLimit] = {}
        self._shares: dict[str, dict[str, BackendUse]] = {}
        """Per backend, the other live workers sending to it, with what they said of it."""
        self._me = ""
        self._live = 0
        """Live workers in the registry at the last refresh, this one included."""

    def _share(self, configured: int, demand: Mapping[str, float]) -> int:
        """Our part of a backend's ``configured`` limit, by the ``demand`` of each worker
        sending to it (ours included; see :func:`demands`). Engine processes started
        together by one ``batchd serve`` (``siblings``) start sending at the same moment,
        before either can see the other in the registry: until the registry shows as many
        live workers, each counts on all of them, so that the first to register does not
        take the whole limit. From then on the limit is divided among those sending to
        the backend: a sibling that never sends to it (engine/worker.py: the embedded
        models, a concurrency of 1) takes no part."""
        if self._live < self._siblings:
            return max(1, configured // self._siblings)
        return weighted_share_of(configured, self._me, demand)

    def get(
        self,
        name: str,
        configured: int,
        *,
        adaptive: bool = True,
        background: bool = False,
        slowdown: float = 1.5,
        probe: LoadProbe | None = None,
    ) -> BackendLimit:
        limit = self._by_name.get(name)
        if limit is None:
            # A backend not seen before: no slot until the registry grants one.
            limit = BackendLimit(
                name,
                configured,
                ceiling=0,
                adaptive=self._adaptive and adaptive,
                background=background,
                slowdown=slowdown,
                probe=probe,
                weight_of=self._weight_of,
            )
            limit.target = self._share(configured, self._demands(name, [])[0])
            limit.on_change = self._on_change
            limit.last_used = time.monotonic()
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

    def usage(self) -> dict[str, BackendUse]:
        """What the registry hears from us: each backend we send to (:meth:`active`) or
        still hold slots of, with the tenants we have work for there and those slots."""
        active = set(self.active())
        return {
            name: limit.usage()
            for name, limit in sorted(self._by_name.items())
            if name in active or limit.holds() > 0
        }

    def wanting(self) -> bool:
        """Whether a backend we send to has less than its part, because others still
        hold it: the registry should be asked again soon."""
        active = set(self.active())
        return any(
            lim.ceiling < lim.target for name, lim in self._by_name.items() if name in active
        )

    def apply(self, me: str, live: Registry) -> dict[str, BackendUse]:
        """Re-divide every backend's limit among the live workers sending to it, by
        their tenants' weights (:func:`demands`), growing only into what the others do
        not hold; returns what the registry should now hear from us (:meth:`usage`)."""
        self._me = me
        self._live = len({*live, me})
        users: dict[str, dict[str, BackendUse]] = {}
        for owner, backends in live.items():
            if owner == me:
                continue
            for name, use in backends.items():
                users.setdefault(name, {})[owner] = use
        self._shares = users
        active = set(self.active())
        for name, limit in self._by_name.items():
            demand, spread = self._demands(name, limit.tenants())
            limit.set_spread(spread)
            target = self._share(limit.configured, demand) if name in active else 0
            part = target
            if part > limit.ceiling:
                held = sum(use["holds"] for use in users.get(name, {}).values())
                part = min(part, max(limit.ceiling, limit.configured - held))
            limit.target = target
            limit.set_ceiling(part)
        return self.usage()

    def _demands(self, name: str, mine: Sequence[str]) -> tuple[dict[str, float], dict[str, int]]:
        workers: dict[str, Sequence[str]] = {
            o: use["keys"] for o, use in self._shares.get(name, {}).items()
        }
        workers[self._me] = mine
        return demands(workers, self._weight_of or equal_weights)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per backend: ceiling, limit, tries in flight, the server's queue (its gauge
        or our estimate), what steers the limit; for metrics and the dashboard."""
        return {name: lim.snapshot() for name, lim in sorted(self._by_name.items())}
