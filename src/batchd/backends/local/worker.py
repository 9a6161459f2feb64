"""A micro-batching worker thread: requests from the event loop in, batches out.

Coroutines call :meth:`BatchWorker.submit` with one item each. A dedicated thread
takes the first waiting item, lingers a few milliseconds for more (so concurrent
requests share one model call), runs the batch and hands each result back to the
event loop through ``call_soon_threadsafe``. Inference therefore never runs on the
loop, and the model is loaded lazily, in the worker thread, by the first batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
M = TypeVar("M")


def deliver(
    future: asyncio.Future[Any], result: Any = None, error: BaseException | None = None
) -> None:
    """Resolve ``future`` from any thread (a no-op if it was cancelled or its loop is gone)."""

    def _set() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    # A closed loop raises RuntimeError: nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        future.get_loop().call_soon_threadsafe(_set)


@dataclass(slots=True)
class _Job(Generic[T]):
    item: T
    future: asyncio.Future[Any]


_STOP = object()


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
        self._load = load
        self._run = run
        self._max_batch = max_batch
        self._window_s = window_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._model: M | None = None
        self._load_error: BaseException | None = None
        self._closed = False

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result."""
        if self._closed:
            raise RuntimeError(f"{self.name} worker is closed")
        self._ensure_thread()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put(_Job(item, future))
        return await future

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name=f"batchd-local-{self.name}", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        """Stop the thread after the batch in hand (blocking; call it off the loop)."""
        self._closed = True
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _main(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            jobs: list[_Job[T]] = [first]
            stop = self._gather(jobs)
            self._process([j for j in jobs if not j.future.cancelled()])
            if stop:
                break
        self._model = None

    def _gather(self, jobs: list[_Job[T]]) -> bool:
        """Add to ``jobs`` what arrives within the window; True if asked to stop."""
        deadline = time.monotonic() + self._window_s
        while len(jobs) < self._max_batch:
            try:
                # Take whatever is already queued without waiting; linger only
                # while the queue is empty and the window is open.
                job = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is _STOP:
                return True
            jobs.append(job)
        return False

    def _process(self, jobs: list[_Job[T]]) -> None:
        if not jobs:
            return
        try:
            model = self._get_model()
            results = self._run(model, [j.item for j in jobs])
        except Exception as exc:
            log.exception("%s: batch of %d failed", self.name, len(jobs))
            for job in jobs:
                deliver(job.future, error=exc)
            return
        for job, result in zip(jobs, results, strict=True):
            deliver(job.future, result)

    def _get_model(self) -> M:
        if self._model is None:
            if self._load_error is not None:
                raise self._load_error
            started = time.monotonic()
            try:
                self._model = self._load()
            except Exception as exc:
                self._load_error = exc
                raise
            log.info("%s: loaded in %.2fs", self.name, time.monotonic() - started)
        return self._model
