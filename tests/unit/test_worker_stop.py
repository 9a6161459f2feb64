"""Stopping a worker: its loop ends even if the cancellation does not reach it.

On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that arrives just
as the awaited event is set; a ``batchd serve`` then hung in shutdown with its
worker loop still polling. The loop must end by itself once the worker drains.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from batchd.backends.router import Router
from batchd.blobs.local import LocalBlobStore
from batchd.engine.worker import Worker, WorkerOptions
from batchd.retry import RetryPolicy
from batchd.store.sql import SqlStore

pytestmark = pytest.mark.anyio


async def test_a_draining_worker_loop_ends_without_being_cancelled(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'batchd.db'}")
    await store.open()
    blobs = LocalBlobStore(tmp_path / "blobs")
    worker = Worker(
        store=store,
        blobs=blobs,
        router=Router([]),
        policy=RetryPolicy(max_attempts=1, base=0.01, cap=0.01),
        options=WorkerOptions(poll_interval=0.05),
    )
    worker.start()
    try:
        await asyncio.sleep(0.2)  # a few ticks
        main = worker._main
        assert main is not None and not main.done()
        # What a swallowed cancel leaves behind: draining, but never cancelled.
        worker._draining = True
        await asyncio.wait_for(asyncio.shield(main), timeout=5)
    finally:
        await worker.stop()
        await blobs.close()
        await store.close()
