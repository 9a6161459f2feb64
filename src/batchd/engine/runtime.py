"""The parts a batchd process runs on, opened and closed in one order.

``batchd serve`` (server/app.py) and ``batchd worker`` (engine/standalone.py) both
run on a store, a blob store, a backend router, the API keys of the database (a
:class:`~batchd.apikeys.directory.KeyDirectory`) and, unless the API runs alone, a
worker with its observers and companions (a webhook sender, say). Both open and
close them through :class:`Runtime`, so the order is written once: the worker
stops first (it drains requests in flight and commits their results), then what
ran beside it, then the router, the blobs and last the store they all wrote to.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from batchd.apikeys.directory import KeyDirectory
from batchd.backends.registry import build_router
from batchd.backends.router import Router
from batchd.blobs.base import BlobStore
from batchd.blobs.open import open_blob_store
from batchd.engine.events import EngineObserver, Observers
from batchd.engine.queue_limits import QueueLimits
from batchd.engine.worker import Worker, WorkerOptions
from batchd.retry import RetryPolicy
from batchd.settings import Settings
from batchd.store.base import Store
from batchd.store.open import open_store

log = logging.getLogger(__name__)


class Companion(Protocol):
    """Something that runs beside the worker (a webhook sender, say)."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


def build_worker(
    settings: Settings,
    *,
    store: Store,
    blobs: BlobStore,
    router: Router,
    observers: Observers | None = None,
    keys: KeyDirectory | None = None,
    siblings: int = 1,
    sibling: int = 0,
) -> Worker:
    return Worker(
        store=store,
        blobs=blobs,
        router=router,
        policy=RetryPolicy(
            max_attempts=settings.max_attempts, base=settings.retry_base, cap=settings.retry_cap
        ),
        options=WorkerOptions(
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval,
            max_shards=settings.max_shards,
            shard_size=settings.shard_size,
            max_tasks=settings.max_tasks_per_batch,
            max_errors=settings.max_validation_errors,
            max_line_bytes=settings.max_batch_file_bytes,
            cancel_grace=settings.cancel_grace,
            file_purge_interval=settings.file_purge_interval,
            queue_limits=queue_limits(settings),
            adaptive_concurrency=settings.adaptive_concurrency,
            siblings=siblings,
            sibling=sibling,
        ),
        observers=observers,
        limits_for=keys.limits_for if keys is not None else None,
        weight_of=keys.weight if keys is not None else None,
    )


def queue_limits(settings: Settings) -> QueueLimits:
    """The server-wide queue limits (each key may override them)."""
    return QueueLimits(
        max_tokens=settings.max_enqueued_tokens, max_requests=settings.max_enqueued_requests
    )


@dataclass
class Runtime:
    settings: Settings
    store: Store
    blobs: BlobStore
    router: Router
    worker: Worker | None
    keys: KeyDirectory
    companions: list[Companion] = field(default_factory=list)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        with_worker: bool = True,
        observers: Sequence[EngineObserver | None] = (),
        companions: Sequence[Companion | None] = (),
        siblings: int = 1,
        sibling: int = 0,
    ) -> Runtime:
        """Open the store (migrated), blobs and router; build the worker unless the
        API runs alone, with ``observers`` (``None`` entries are skipped). Nothing
        runs until :meth:`start`."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = open_store(settings)
        await store.open()
        blobs = open_blob_store(settings.storage, settings.data_dir)
        router = build_router(settings)
        keys = KeyDirectory(store, defaults=queue_limits(settings), refresh=settings.key_refresh)
        await keys.load()
        worker = None
        if with_worker:
            worker = build_worker(
                settings, store=store, blobs=blobs, router=router, keys=keys,
                siblings=siblings, sibling=sibling,
            )  # fmt: skip
            for observer in observers:
                if observer is not None:
                    worker.observers.add(observer)
        return cls(
            settings=settings,
            store=store,
            blobs=blobs,
            router=router,
            worker=worker,
            keys=keys,
            companions=[c for c in companions if c is not None],
        )

    def start(self) -> None:
        self.keys.start()
        for companion in self.companions:
            companion.start()
        if self.worker is not None:
            self.worker.start()

    async def close(self) -> None:
        """Stop in order; a part that fails to stop does not keep the rest open."""
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if self.worker is not None:
            steps.append(("the worker", self.worker.stop))
        steps += [(f"{c!r}", c.stop) for c in self.companions]
        steps.append(("the key directory", self.keys.stop))
        steps += [("the router", self.router.aclose), ("the blob store", self.blobs.close)]
        for name, stop in steps:
            try:
                await stop()
            except Exception:
                log.exception("stopping %s failed", name)
        await self.store.close()
