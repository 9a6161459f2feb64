"""What the engine tells the outside world as it works.

Metrics, webhooks and the dashboard observe the engine through this one
interface; the engine never imports them. Observers must be cheap and must not
raise (a failing observer is logged and ignored) and must never block: anything
slow (a webhook delivery) is queued by the observer itself.
"""

from __future__ import annotations

import logging
from typing import Protocol

from batchd.store.records import BatchRecord

log = logging.getLogger(__name__)


class EngineObserver(Protocol):
    def request_finished(
        self, *, backend: str, endpoint: str, status: int | None, seconds: float, attempt: int
    ) -> None:
        """One try against a backend ended (``status`` None: no answer came)."""
        ...

    def request_retried(self, *, backend: str, status: int | None) -> None:
        """A try failed and will be retried (``status`` 429 for a rate limit)."""
        ...

    def line_recorded(self, *, batch_id: str, ok: bool) -> None:
        """A line's final outcome was handed to the writer."""
        ...

    def batch_finished(self, batch: BatchRecord) -> None:
        """A batch reached a terminal status (completed, failed, expired, cancelled)."""
        ...


class NullObserver:
    def request_finished(
        self, *, backend: str, endpoint: str, status: int | None, seconds: float, attempt: int
    ) -> None:
        return None

    def request_retried(self, *, backend: str, status: int | None) -> None:
        return None

    def line_recorded(self, *, batch_id: str, ok: bool) -> None:
        return None

    def batch_finished(self, batch: BatchRecord) -> None:
        return None


class Observers:
    """Fans every event out to several observers, isolating their failures."""

    def __init__(self, observers: list[EngineObserver] | None = None) -> None:
        self.observers: list[EngineObserver] = list(observers or [])

    def add(self, observer: EngineObserver) -> None:
        self.observers.append(observer)

    def request_finished(
        self, *, backend: str, endpoint: str, status: int | None, seconds: float, attempt: int
    ) -> None:
        for o in self.observers:
            try:
                o.request_finished(
                    backend=backend, endpoint=endpoint, status=status, seconds=seconds,
                    attempt=attempt,
                )  # fmt: skip
            except Exception:
                log.exception("observer failed")

    def request_retried(self, *, backend: str, status: int | None) -> None:
        for o in self.observers:
            try:
                o.request_retried(backend=backend, status=status)
            except Exception:
                log.exception("observer failed")

    def line_recorded(self, *, batch_id: str, ok: bool) -> None:
        for o in self.observers:
            try:
                o.line_recorded(batch_id=batch_id, ok=ok)
            except Exception:
                log.exception("observer failed")

    def batch_finished(self, batch: BatchRecord) -> None:
        for o in self.observers:
            try:
                o.batch_finished(batch)
            except Exception:
                log.exception("observer failed")
