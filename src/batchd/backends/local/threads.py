"""The thread a local model lives on: started on first use, stopped by ``close()``.

Every embedded model (the chat engine, the embedding and moderation workers) is
owned by one dedicated thread, so inference never runs on the event loop and the
model's native state is touched by one thread only. :class:`WorkerThread` is that
thread's lifecycle (lazy start, an inbox, a stop sentinel, join on close),
:class:`LazyModel` loads the model on it on first use and remembers a failed load,
and :func:`deliver` hands a result back to the event loop that asked for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

M = TypeVar("M")

STOP: Any = object()
"""Put on the inbox by :meth:`WorkerThread.close`: the thread's loop ends when it takes it."""


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


class WorkerThread:
    """One daemon thread running ``main()``, fed through :attr:`inbox`.

    The thread starts with the first :meth:`put` (so a model nobody asks for is never
    loaded); :meth:`close` queues :data:`STOP` behind whatever is already in the inbox
    and waits for ``main`` to return. ``main`` must return once it takes :data:`STOP`.
    """

    def __init__(self, name: str, main: Callable[[], None]) -> None:
        self.name = name
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._main = main
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.closed = False

    def put(self, item: Any) -> None:
        """Queue ``item`` for the thread, starting it if needed."""
        if self.closed:
            raise RuntimeError(f"{self.name} is closed")
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
                self._thread.start()
        self.inbox.put(item)

    def close(self) -> None:
        """Stop the thread and wait for it (blocking: call it off the event loop)."""
        self.closed = True
        with self._lock:
            thread = self._thread
        if thread is not None:
            self.inbox.put(STOP)
            thread.join()


class LazyModel(Generic[M]):
    """A model loaded by its first user (on the worker thread); a failed load is kept
    and raised again to every later user instead of retrying it per request."""

    def __init__(self, name: str, load: Callable[[], M]) -> None:
        self.name = name
        self._load = load
        self.model: M | None = None
        self._error: BaseException | None = None

    def get(self) -> M:
        if self.model is None:
            if self._error is not None:
                raise self._error
            started = time.monotonic()
            try:
                self.model = self._load()
            except Exception as exc:
                self._error = exc
                raise
            log.info("%s: loaded in %.2fs", self.name, time.monotonic() - started)
        return self.model

    def drop(self) -> M | None:
        """Forget the model (the caller frees it); returns it, if it was loaded."""
        model, self.model = self.model, None
        return model
