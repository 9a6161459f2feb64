"""Wiring a worker from settings, and ``batchd worker``: workers with no HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Protocol

from batchd.backends.registry import build_router
from batchd.backends.router import Router
from batchd.blobs.base import BlobStore
from batchd.blobs.open import open_blob_store
from batchd.engine.events import Observers
from batchd.engine.worker import Worker, WorkerOptions
from batchd.retry import RetryPolicy
from batchd.settings import Settings
from batchd.store.sql import SqlStore

log = logging.getLogger("batchd.worker")


def open_store(settings: Settings) -> SqlStore:
    return SqlStore(
        settings.resolved_database_url(),
        sqlite_synchronous=settings.sqlite_synchronous,
        pool_size=settings.db_pool_size,
    )


def build_worker(
    settings: Settings,
    *,
    store: SqlStore,
    blobs: BlobStore,
    router: Router,
    observers: Observers | None = None,
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
            adaptive_concurrency=settings.adaptive_concurrency,
        ),
        observers=observers,
    )


class Companion(Protocol):
    """Something that runs beside the worker (a webhook sender, say)."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


async def run_worker(
    settings: Settings,
    *,
    observers: Observers | None = None,
    companions: Sequence[Companion] = (),
    on_start: Callable[[Worker], None] | None = None,
) -> None:
    """Run one worker until SIGTERM or SIGINT, then drain it gracefully."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings)
    await store.open()
    blobs = open_blob_store(settings.storage, settings.data_dir)
    router = build_router(settings)
    worker = build_worker(settings, store=store, blobs=blobs, router=router, observers=observers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for companion in companions:
        companion.start()
    worker.start()
    if on_start is not None:
        on_start(worker)
    log.info("batchd worker ready (%s)", worker.owner)
    try:
        await stop.wait()
    finally:
        log.info("worker shutting down")
        with contextlib.suppress(Exception):
            await worker.stop()
        for companion in companions:
            with contextlib.suppress(Exception):
                await companion.stop()
        await router.aclose()
        await blobs.close()
        await store.close()
