"""Waking workers in other processes: PostgreSQL ``LISTEN``/``NOTIFY``.

The store sends ``NOTIFY`` in the same transaction that creates work (a batch is
created, cancelled, or enters its run phase), so the message is delivered exactly
when the work is visible. Each worker keeps one extra connection that listens and
reconnects when dropped; polling (``poll_interval``) remains the safety net, so a
lost notification only delays work, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CHANNEL = "batchd_work"


class WorkListener:
    def __init__(self, dsn: str, callback: Callable[[], None]) -> None:
        self._dsn = dsn
        self._callback = callback
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="work-listener")

    async def _run(self) -> None:
        import asyncpg

        delay = 0.5
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda *_, ev=lost: ev.set())
                await conn.add_listener(CHANNEL, lambda *_: self._callback())
                delay = 0.5
                # Work created while we were not listening is found by the next poll.
                self._callback()
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, delay)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
