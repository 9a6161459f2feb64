"""Group commit for results.

Each finished request hands its row to :meth:`ResultWriter.submit` and waits
until it is durable. Rows arriving while a transaction runs are gathered and
committed together by the next one, so a busy batch costs a handful of
transactions per second, not one per request, while every request still
returns only after its result is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from batchd.store.base import ResultStore
from batchd.store.records import ResultRow

log = logging.getLogger(__name__)


class ResultWriter:
    def __init__(
        self, store: ResultStore, *, max_rows: int = 2000, linger: float = 0.002, min_rows: int = 16
    ) -> None:
        self._linger = linger
        self._min_rows = min_rows
        self._store = store
        self._max_rows = max_rows
        self._pending: list[tuple[ResultRow, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="result-writer")

    async def submit(self, row: ResultRow) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, fut))
        self._idle.clear()
        self._wake.set()
        await fut

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if len(self._pending) < self._min_rows:
                # A moment's wait turns a trickle of tiny transactions into a few
                # larger ones; each costs a thread hop and a WAL append.
                await asyncio.sleep(self._linger)
            while self._pending:
                batch = self._pending[: self._max_rows]
                del self._pending[: self._max_rows]
                try:
                    await self._store.record_results([row for row, _ in batch])
                except Exception as exc:  # the waiters decide what a lost write means
                    log.exception("writing %d results failed", len(batch))
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                else:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)
            self._idle.set()

    async def close(self) -> None:
        if self._task is not None:
            # Let queued rows land before stopping.
            await self._idle.wait()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
