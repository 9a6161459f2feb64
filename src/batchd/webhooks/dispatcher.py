"""Delivering webhook events without ever holding up a batch.

The engine calls :meth:`WebhookDispatcher.batch_finished` from its own tasks; it
only builds the event and puts it on a bounded in-memory queue. A background task
(started and stopped with the app) takes events off the queue and delivers each
in a task of its own, so one slow or dead receiver delays only its own retries.
A delivery is retried with exponential backoff and jitter on any non-2xx answer,
timeout or connection error, up to ``max_attempts`` tries; the ``webhook-id`` stays
the same across retries so receivers can de-duplicate. Events are not persisted:
ones still queued or backing off when the process stops are logged and lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp

from batchd.retry import RetryPolicy
from batchd.settings import Settings
from batchd.store.records import BatchRecord
from batchd.webhooks.events import WebhookEvent, batch_event
from batchd.webhooks.signing import WebhookSigner

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
MAX_IN_FLIGHT = 32
USER_AGENT = "batchd-webhooks/1"


class WebhookDispatcher:
    """An engine observer that POSTs batch events to one URL."""

    def __init__(
        self,
        url: str,
        *,
        signer: WebhookSigner | None = None,
        policy: RetryPolicy | None = None,
        timeout: float = 10.0,
        on_result: Callable[[str], None] | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.url = url
        self._signer = signer
        self._policy = policy or RetryPolicy(max_attempts=8, base=1.0, cap=300.0)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._on_result = on_result or (lambda _result: None)
        self._queue: asyncio.Queue[WebhookEvent] = asyncio.Queue(max_pending)
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._deliveries: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, headers={"user-agent": USER_AGENT}
        )
        self._main = asyncio.create_task(self._run(), name="webhooks")

    async def stop(self, grace: float = 5.0) -> None:
        """Give deliveries under way ``grace`` seconds, then drop what is left."""
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        if self._deliveries:
            await asyncio.wait(list(self._deliveries), timeout=grace)
        lost = len(self._deliveries) + self._queue.qsize()
        for task in list(self._deliveries):
            task.cancel()
        for task in list(self._deliveries):
            with contextlib.suppress(BaseException):
                await task
        if lost:
            log.warning("shutting down with %d webhook event(s) undelivered", lost)
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------ engine observer

    def batch_finished(self, batch: BatchRecord) -> None:
        event = batch_event(batch.id, batch.status, int(time.time()))
        if event is None:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            log.error("webhook queue full: dropping %s for %s", event.type, batch.id)
            self._on_result("dropped")

    def request_finished(
        self, *, backend: str, endpoint: str, status: int | None, seconds: float, attempt: int
    ) -> None:
        return None

    def request_retried(self, *, backend: str, status: int | None) -> None:
        return None

    def line_recorded(self, *, batch_id: str, ok: bool) -> None:
        return None

    # ------------------------------------------------------------- delivery

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            await self._slots.acquire()
            task = asyncio.create_task(self._deliver(event), name=f"webhook {event.id}")
            self._deliveries.add(task)
            task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery failed", exc_info=task.exception())

    async def _deliver(self, event: WebhookEvent) -> None:
        body = event.body()
        attempt = 0
        while True:
            attempt += 1
            status, retry_after, problem = await self._post(event, body)
            if status is not None and 200 <= status < 300:
                self._on_result("delivered")
                log.info("webhook %s %s delivered (try %d)", event.type, event.id, attempt)
                return
            if not self._policy.can_retry(attempt):
                self._on_result("gave_up")
                log.error(
                    "webhook %s for %s not delivered after %d tries: %s",
                    event.type,
                    event.batch_id,
                    attempt,
                    problem,
                )
                return
            self._on_result("retry")
            delay = self._policy.delay(attempt, retry_after)
            log.warning("webhook %s: %s; retrying in %.1fs", event.id, problem, delay)
            await asyncio.sleep(delay)

    async def _post(self, event: WebhookEvent, body: bytes) -> tuple[int | None, float | None, str]:
        """``(status or None, Retry-After seconds or None, what went wrong)``."""
        assert self._session is not None, "start() the dispatcher first"
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": str(stamp),
        }
        if self._signer is not None:
            headers.update(self._signer.headers(event.id, stamp, body))
        try:
            async with self._session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                await resp.read()
                retry_after = _retry_after(resp.headers.get("retry-after"))
                return resp.status, retry_after, f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, None, f"{type(exc).__name__}: {exc}"


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def build_dispatcher(
    settings: Settings, on_result: Callable[[str], None] | None = None
) -> WebhookDispatcher | None:
    """The dispatcher ``settings`` ask for, or None when no webhook URL is set.

    Raises ValueError for a malformed secret, so a bad config fails at start-up.
    """
    if not settings.webhook_url:
        return None
    signer = WebhookSigner(settings.webhook_secret) if settings.webhook_secret else None
    return WebhookDispatcher(
        settings.webhook_url,
        signer=signer,
        policy=RetryPolicy(
            max_attempts=settings.webhook_max_attempts,
            base=settings.webhook_retry_base,
            cap=settings.webhook_retry_cap,
        ),
        timeout=settings.webhook_timeout,
        on_result=on_result,
    )
