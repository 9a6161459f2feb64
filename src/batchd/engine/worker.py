"""The worker: claims work from the store and runs it.

One loop per process. Each tick it frees the leases of dead local processes,
flags expired batches, then claims what it has room for: batches to validate,
shards to run, batches to finalize. Shards are claimed fairly between tenants (API
keys): from the key with the fewest shards running anywhere per its weight, then
by priority among that key's batches, then from its batch with the fewest shards
running, and a key spreads over the workers rather than piling onto one
(store/fair_order.py); inside the worker each backend's capacity is shared the same
way per request (engine/fair.py). Where several workers are live, small batches
are cut into pieces for each (engine/shards.py). A heartbeat renews every lease it
holds; leases of a worker on another host that died lapse and are taken over.

Workers in other processes (other hosts) are woken by PostgreSQL NOTIFY when one
is available, else they find new work at their next poll. Every second the worker
registers in the ``workers`` table with the backends it is sending to and
re-divides each backend's concurrency limit among the workers sending to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from batchd.backends.router import Router
from batchd.blobs.base import BlobStore
from batchd.clock import now
from batchd.engine.events import Observers
from batchd.engine.executor import Executor, ShardJob
from batchd.engine.fair import WeightOf
from batchd.engine.finalize import finalize_batch
from batchd.engine.limits import Limits
from batchd.engine.owner import is_dead_local_owner, new_owner_id
from batchd.engine.queue_limits import LimitsFor, QueueLimits, fixed_limits
from batchd.engine.upload_purge import purge_uploads
from batchd.engine.validate import validate_batch
from batchd.engine.writer import ResultWriter
from batchd.retry import RetryPolicy
from batchd.states import StopReason
from batchd.store.base import Store
from batchd.store.records import BackendUse, BatchRecord, ShardRecord

log = logging.getLogger(__name__)

MAX_VALIDATIONS_PER_TICK = 4
WANTING_INTERVAL = 0.1
"""Seconds between registrations while a backend's part of its limit is still held by
other workers (engine/limits.py): they give it up at their next registration."""


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    lease_seconds: float = 30.0
    poll_interval: float = 0.5
    max_shards: int = 8
    shard_size: int = 1000
    max_tasks: int = 50_000
    max_errors: int = 100
    max_line_bytes: int = 200 * 1024 * 1024
    cancel_grace: float = 30.0
    file_purge_interval: float = 60.0
    extra_shards: int = 2
    """Shards a worker at ``max_shards`` may still start for batches with none running
    or tenants with none here, so a newly arrived batch (or a key whose work runs on
    other workers) starts at once instead of after a shard of a huge one."""
    tenant_shards: int = 8
    """Shards a worker with every other place taken may still start, each for a
    tenant (API key) with none running here: one key's many new batches can fill the
    ``extra_shards`` too, and another key's batch must not wait behind all of them."""
    registry_interval: float = 1.0
    """Seconds between worker-registry refreshes (the shared concurrency split)."""
    siblings: int = 1
    """Engine processes of one ``batchd serve``, this one included (engine/limits.py)."""
    sibling: int = 0
    """Which of them this is. The first runs every batch; the others only batches of
    a model routed over HTTP to a backend whose ``concurrency`` gives each of them a
    request (so a concurrency of 1 stays 1), never the embedded models (one engine
    process loads them, and batches their requests together)."""
    adaptive_concurrency: bool = True
    """AIMD per backend (engine/limits.py); off: always the full share."""
    queue_limits: QueueLimits = field(default_factory=QueueLimits)
    """Bounds on each key's unfinished work (engine/queue_limits.py), unless the worker
    is given ``limits_for`` (per-key limits, apikeys/directory.py)."""


class Worker:
    def __init__(
        self,
        *,
        store: Store,
        blobs: BlobStore,
        router: Router,
        policy: RetryPolicy,
        options: WorkerOptions,
        observers: Observers | None = None,
        limits_for: LimitsFor | None = None,
        weight_of: WeightOf | None = None,
    ) -> None:
        """``limits_for(tenant)``: a tenant's queue limits (default: ``options.queue_limits``
        for all); ``weight_of(tenant)``: its share of capacity relative to others (default
        1.0 each). Both are read often (each validation; whenever capacity is handed
        out), so they must be cheap: the key directory answers them from memory."""
        self.owner = new_owner_id()
        self._limits_for = limits_for or fixed_limits(options.queue_limits)
        self._weight_of = weight_of
        self.observers = observers or Observers()
        self._store = store
        self._blobs = blobs
        self._opts = options
        self._writer = ResultWriter(store)
        self._router = router
        self.executor = Executor(
            store=store,
            blobs=blobs,
            router=router,
            policy=policy,
            writer=self._writer,
            cancel_grace=options.cancel_grace,
            observers=self.observers,
            limits=Limits(
                adaptive=options.adaptive_concurrency,
                weight_of=weight_of,
                siblings=options.siblings,
                on_change=self.wake,
            ),
        )
        self.limits = self.executor.limits
        self._listener = store.listener(self.wake)
        self._registered: dict[str, BackendUse] | None = None
        self._workers = 1  # live workers at the last registry refresh, this one included
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._shards: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._phases: set[str] = set()  # batch ids validating/finalizing here
        self._stops: dict[str, StopReason | None] = {}
        self._main: asyncio.Task[None] | None = None
        self._batch_info: dict[str, BatchRecord] = {}
        self._deadlines: dict[str, int] = {}
        """When the batches we run expire (kept past that until the store flags them)."""
        self._can_run = self._sibling_runs if options.sibling > 0 else None
        self._draining = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._writer.start()
        if self._listener is not None:
            self._listener.start()
        self._main = asyncio.create_task(self._loop(), name="worker")

    def wake(self) -> None:
        """New work may be there (a batch was created or cancelled)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop claiming; let requests in flight finish (up to the cancel grace), then
        release every claim so another worker (or this one, restarted) resumes at once."""
        self._draining = True
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        shards = list(self._shards.values())
        if shards:
            # Each shard task stops dispatching, waits out its in-flight requests for
            # up to the grace period, and releases its lease itself.
            await asyncio.wait(shards, timeout=self._opts.cancel_grace + 5)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._writer.close()
        if self._listener is not None:
            await self._listener.close()
        with contextlib.suppress(Exception):
            await self._store.release_leases([self.owner])
        with contextlib.suppress(Exception):
            await self._store.forget_workers(owners=[self.owner])

    # ----------------------------------------------------------------- loop

    async def _loop(self) -> None:
        last_heartbeat = 0.0
        last_purge = 0.0
        last_expiry = 0.0
        last_registry = 0.0
        # Not ``while True``: on Python 3.11 ``asyncio.wait_for`` can swallow a
        # cancellation that arrives as its inner wait completes (the wake event is set
        # often), and the loop then outlived stop() forever. Draining ends it too.
        while not self._draining:
            try:
                t = time.time()
                if t - last_heartbeat >= self._opts.lease_seconds / 3:
                    await self._heartbeat()
                    last_heartbeat = t
                since = t - last_registry
                if (
                    since >= self._opts.registry_interval
                    or self.limits.usage() != self._registered
                    or (since >= WANTING_INTERVAL and self.limits.wanting())
                ):
                    await self._register()
                    last_registry = t
                if t - last_purge >= self._opts.file_purge_interval:
                    await self._purge_files()
                    last_purge = t
                if t - last_expiry >= 1.0 or self._window_passed(t):
                    await self._store.request_expiry(now())
                    self._deadlines = {b: e for b, e in self._deadlines.items() if e > t}
                    last_expiry = t
                await self._refresh_stops()
                await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker tick failed; retrying")
            wait = WANTING_INTERVAL if self.limits.wanting() else self._opts.poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()

    async def _heartbeat(self) -> None:
        t = time.time()
        await self._store.renew_leases(self.owner, t + self._opts.lease_seconds)
        owners = await self._store.lease_owners(t)
        dead = [o for o in owners if is_dead_local_owner(o, me=self.owner)]
        if dead:
            log.info("taking over work of %d dead worker(s): %s", len(dead), ", ".join(dead))
            await self._store.release_leases(dead)
        # Registry rows of workers gone for long (killed on another host) are garbage.
        await self._store.forget_workers(owners=dead, before=t - 10 * self._opts.lease_seconds)

    async def _register(self) -> None:
        """Say which backends we send to, for which tenants, and the slots we hold
        there; take our part of each backend's limit, as far as the others leave it."""

        def decide(live: dict[str, dict[str, BackendUse]]) -> dict[str, BackendUse]:
            # Workers on this host whose process is gone do not count (their part is free).
            live = {o: b for o, b in live.items() if not is_dead_local_owner(o, me=self.owner)}
            self._workers = len(live.keys() | {self.owner})
            self._registered = self.limits.apply(self.owner, live)
            return self._registered

        t = time.time()
        await self._store.register_worker(self.owner, t, t - self._opts.lease_seconds, decide)

    def _window_passed(self, t: float) -> bool:
        """Whether a batch we are running has reached the end of its window: it is
        flagged at once rather than at the next once-a-second sweep."""
        return any(e <= t for e in self._deadlines.values())

    async def _refresh_stops(self) -> None:
        active = {key[0] for key in self._shards}
        self._stops = await self._store.stop_reasons(active) if active else {}

    def _sibling_runs(self, model: str | None) -> bool:
        route = self._router.resolve(model) if model is not None else None
        return (
            route is not None
            and not self._router.is_fallback(route)
            and route.concurrency >= self._opts.siblings
        )

    def _until(self) -> float:
        return time.time() + self._opts.lease_seconds

    async def _claim(self) -> None:
        store, opts = self._store, self._opts
        validating = 0
        while validating < MAX_VALIDATIONS_PER_TICK:
            batch = await store.claim_validation(self.owner, time.time(), self._until())
            if batch is None:
                break
            validating += 1
            self._spawn(
                validate_batch(
                    batch,
                    owner=self.owner,
                    store=store,
                    blobs=self._blobs,
                    max_tasks=opts.max_tasks,
                    max_errors=opts.max_errors,
                    max_line_bytes=opts.max_line_bytes,
                    shard_size=opts.shard_size,
                    observers=self.observers,
                    model_served=functools.partial(self._router.serves, endpoint=batch.endpoint),
                    limits_for=self._limits_for,
                    tokenizer_for=self._router.tokenizer_for,
                    workers=self._workers,
                ),
                f"validate {batch.id}",
            )
        if validating:
            # Batches just claimed for validation get a head start: once they have
            # shards (their tasks wake this loop) the next tick claims fairly, by
            # priority, among all of them rather than only among those already running.
            return
        # Places in tiers, each claim narrower than the last: any shard up to
        # max_shards, then newcomer batches or keys, then keys new to this worker.
        # A tier that runs out below its top leaves none for the narrower ones.
        newcomers = opts.max_shards + opts.extra_shards
        tiers = (
            (opts.max_shards, False, False),
            (newcomers, True, False),
            (newcomers + opts.tenant_shards, False, True),
        )
        for top, newcomers_only, new_tenants_only in tiers:
            while len(self._shards) < top:
                shard = await store.claim_shard(
                    self.owner, time.time(), self._until(), newcomers_only=newcomers_only,
                    new_tenants_only=new_tenants_only, weight_of=self._weight_of,
                    can_run=self._can_run,
                )  # fmt: skip
                if shard is None:
                    break
                self._start_shard(shard)
            if len(self._shards) < top:
                break
        batch = await store.claim_finalization(self.owner, time.time(), self._until())
        if batch is not None:
            self._spawn(
                finalize_batch(
                    batch,
                    owner=self.owner,
                    store=store,
                    blobs=self._blobs,
                    max_line_bytes=opts.max_line_bytes,
                    observers=self.observers,
                ),
                f"finalize {batch.id}",
            )

    def _start_shard(self, shard: ShardRecord) -> None:
        key = (shard.batch_id, shard.shard_no)

        async def run() -> None:
            try:
                batch = self._batch_info.get(shard.batch_id)
                if batch is None:
                    batch = await self._store.get_batch(shard.batch_id, tenant=None)
                    assert batch is not None
                    self._batch_info[shard.batch_id] = batch
                job = ShardJob(
                    shard=shard,
                    endpoint=batch.endpoint,
                    input_file_id=batch.input_file_id,
                    tenant=batch.tenant,
                    priority=batch.priority,
                )
                expires_at = self._deadlines[shard.batch_id] = batch.expires_at

                def stopped() -> bool:
                    # Past its window the batch stops sending at once (the sweep then
                    # flags it in the store), not one poll or sweep later.
                    return (
                        self._draining
                        or self._stops.get(shard.batch_id) is not None
                        or time.time() >= expires_at
                    )

                finished = await self.executor.run(job, stopped)
                if finished:
                    await self._store.complete_shard(shard, self.owner)
                else:
                    await self._store.release_shard(shard, self.owner)
            finally:
                self._shards.pop(key, None)
                if not any(k[0] == shard.batch_id for k in self._shards):
                    self._batch_info.pop(shard.batch_id, None)  # fetched again if needed
                    if self._deadlines.get(shard.batch_id, 0) > time.time():
                        del self._deadlines[shard.batch_id]  # else kept until it is flagged
                self._wake.set()

        self._shards[key] = self._spawn(run(), f"shard {shard.batch_id}/{shard.shard_no}")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed", name, exc_info=t.exception())
            self._wake.set()

        task.add_done_callback(done)
        return task

    async def _purge_files(self) -> None:
        """Remove the bytes of deleted and expired files once no batch needs them, the
        parts of finished and expired uploads, and expired idempotency keys."""
        t = now()
        doomed = await self._store.files_to_purge(t)
        for rec in doomed:
            await self._blobs.delete(rec.id)
        await self._store.forget_files([rec.id for rec in doomed])
        await purge_uploads(self._store, self._blobs, t)
        await self._store.purge_idempotency_keys(t)
