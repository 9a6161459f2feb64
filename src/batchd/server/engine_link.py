"""The pipes between the API process and its engine child (see server/engine_process.py).

Two one-way pipes, each end owned by one side:

- parent -> child (the child's stdin): the settings as one JSON line, then one byte
  per wake-up (a batch was created or cancelled). End of file means the parent is
  gone.
- child -> parent (an inherited fd): engine events as JSON lines, so the metrics and
  webhooks of the API process see what the engine does. Events are gathered for a
  moment and sent together: one write per ``FLUSH_SECONDS`` (metrics need nothing
  fresher), not one per request; a finished batch is sent at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from batchd.engine.events import Observers
from batchd.store.records import BatchRecord

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.25
LIMITS_SECONDS = 1.0
"""How often the child sends its per-backend dispatch state (metrics, dashboard)."""
WAKE = b"\n"
READY = "ready"
LIMITS = "limits"


class EventForwarder:
    """An engine observer (in the child) that sends the events to the parent."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._requests: dict[tuple[str, str, int | None, int], list[float]] = {}
        self._retries: dict[tuple[str, int | None], int] = {}
        self._lines: dict[tuple[str, bool], int] = {}
        self._timer: asyncio.TimerHandle | None = None

    def request_finished(
        self, *, backend: str, endpoint: str, status: int | None, seconds: float, attempt: int
    ) -> None:
        key = (backend, endpoint, status, attempt)
        found = self._requests.get(key)
        if found is None:
            self._requests[key] = [seconds]
        else:
            found.append(seconds)
        self._later()

    def request_retried(self, *, backend: str, status: int | None) -> None:
        key = (backend, status)
        self._retries[key] = self._retries.get(key, 0) + 1
        self._later()

    def line_recorded(self, *, batch_id: str, ok: bool) -> None:
        key = (batch_id, ok)
        self._lines[key] = self._lines.get(key, 0) + 1
        self._later()

    def batch_finished(self, batch: BatchRecord) -> None:
        # The batch's lines are counted before its end is announced.
        self.flush()
        self._send({"finished": batch.id})

    def ready(self) -> None:
        self._send({READY: True})

    def limits(self, snapshot: dict[str, Any]) -> None:
        """The worker's per-backend limits (engine/limits.py ``Limits.snapshot``)."""
        self._send({LIMITS: snapshot})

    def _later(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not (self._requests or self._retries or self._lines):
            return
        event = {
            "requests": [[*key, seconds] for key, seconds in self._requests.items()],
            "retries": [[*key, n] for key, n in self._retries.items()],
            "lines": [[*key, n] for key, n in self._lines.items()],
        }
        self._requests, self._retries, self._lines = {}, {}, {}
        self._send(event)

    def _send(self, event: dict[str, Any]) -> None:
        self._write(orjson.dumps(event) + b"\n")


class EventReplayer:
    """Feeds the events of the child (in the parent) to the parent's observers."""

    def __init__(
        self,
        observers: Observers,
        lookup: Callable[[str], Awaitable[BatchRecord | None]],
        on_ready: Callable[[], None],
        on_limits: Callable[[dict[str, Any]], None] = lambda _snapshot: None,
    ) -> None:
        self._observers = observers
        self._lookup = lookup
        self._on_ready = on_ready
        self._on_limits = on_limits
        self._tasks: set[asyncio.Task[None]] = set()

    def replay(self, line: bytes) -> None:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("engine process sent a malformed event: %r", line[:200])
            return
        obs = self._observers
        for backend, endpoint, status, attempt, seconds in event.get("requests", ()):
            for s in seconds:
                obs.request_finished(
                    backend=backend, endpoint=endpoint, status=status, seconds=s, attempt=attempt
                )
        for backend, status, n in event.get("retries", ()):
            for _ in range(n):
                obs.request_retried(backend=backend, status=status)
        for batch_id, ok, n in event.get("lines", ()):
            for _ in range(n):
                obs.line_recorded(batch_id=batch_id, ok=ok)
        if "finished" in event:
            task = asyncio.create_task(self._finished(event["finished"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if event.get(READY):
            self._on_ready()
        if LIMITS in event:
            self._on_limits(event[LIMITS])

    async def _finished(self, batch_id: str) -> None:
        batch = await self._lookup(batch_id)
        if batch is not None:
            self._observers.batch_finished(batch)

    async def drain(self) -> None:
        """Wait for the batch lookups still under way."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))
