"""A micro-batching worker thread: requests from the event loop in, batches out.

Coroutines call :meth:`BatchWorker.submit` with one item each. A dedicated thread
takes the first waiting item, lingers a few milliseconds for more (so concurrent
requests share one model call), runs the batch and hands each result back to the
event loop through ``call_soon_threadsafe``. Inference therefore never runs on the
loop, and the model is loaded lazily, in the worker thread, by the first batch.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from batchd.backends.local.threads import STOP, LazyModel, WorkerThread, deliver

__all__ = ["BatchWorker", "deliver"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
M = TypeVar("M")


@dataclass(slots=True)
class _Job(Generic[T]):
    item: T
    future: asyncio.Future[Any]


class BatchWorker(Generic[M, T, R]):
    """One thread that loads a model of type ``M`` once and runs batches of ``T``.

    ``run(model, items)`` returns one result per item, in order; an exception it
    raises fails the whole batch (each caller gets it).
    """

    def __init__(
        self,
        name: str,
        load: Callable[[], M],
        run: Callable[[M, Sequence[T]], Sequence[R]],
        *,
        max_batch: int,
        window_s: float,
    ) -> None:
        self.name = name
        self._model = LazyModel(name, load)
        self._run = run
        self._max_batch = max_batch
        self._window_s = window_s
        self._thread = WorkerThread(f"batchd-local-{name}", self._main)

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result."""
        if self._thread.closed:
            raise RuntimeError(f"{self.name} worker is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._thread.put(_Job(item, future))
        return await future

    def close(self) -> None:
        """Stop the thread after the batch in hand (blocking; call it off the loop)."""
        self._thread.close()

    def _main(self) -> None:
        inbox = self._thread.inbox
        while True:
            first = inbox.get()
            if first is STOP:
                break
            jobs: list[_Job[T]] = [first]
            stop = self._gather(inbox, jobs)
            self._process([j for j in jobs if not j.future.cancelled()])
            if stop:
                break
        self._model.drop()

    def _gather(self, inbox: queue.SimpleQueue[Any], jobs: list[_Job[T]]) -> bool:
        """Add to ``jobs`` what arrives within the window; True if asked to stop."""
        deadline = time.monotonic() + self._window_s
        while len(jobs) < self._max_batch:
            try:
                # Take whatever is already queued without waiting; linger only
                # while the queue is empty and the window is open.
                job = inbox.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = inbox.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is STOP:
                return True
            jobs.append(job)
        return False

    def _process(self, jobs: list[_Job[T]]) -> None:
        if not jobs:
            return
        try:
            results = self._run(self._model.get(), [j.item for j in jobs])
        except Exception as exc:
            log.exception("%s: batch of %d failed", self.name, len(jobs))
            for job in jobs:
                deliver(job.future, error=exc)
            return
        for job, result in zip(jobs, results, strict=True):
            deliver(job.future, result)
