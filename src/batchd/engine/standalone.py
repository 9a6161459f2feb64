"""``batchd worker``: workers with no HTTP API."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence

from batchd.engine.events import Observers
from batchd.engine.runtime import Companion, Runtime
from batchd.engine.runtime import build_worker as build_worker
from batchd.engine.worker import Worker
from batchd.settings import Settings
from batchd.store.open import open_store as open_store

log = logging.getLogger("batchd.worker")


async def run_worker(
    settings: Settings,
    *,
    observers: Observers | None = None,
    companions: Sequence[Companion] = (),
    on_start: Callable[[Worker], None] | None = None,
    siblings: int = 1,
    sibling: int = 0,
) -> None:
    """Run one worker until SIGTERM or SIGINT, then drain it gracefully (``siblings``: the
    engine processes of one ``batchd serve``, this one included; ``sibling``: which of
    them this is, from 0)."""
    runtime = await Runtime.open(
        settings, observers=[observers], companions=companions, siblings=siblings,
        sibling=sibling,
    )  # fmt: skip
    worker = runtime.worker
    assert worker is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime.start()
    if on_start is not None:
        on_start(worker)
    log.info("batchd worker ready (%s)", worker.owner)
    try:
        await stop.wait()
    finally:
        log.info("worker shutting down")
        await runtime.close()
