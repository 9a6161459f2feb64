"""batchd's metric families, and the engine observer that feeds them.

Each :class:`Metrics` has a registry of its own (not the process-global one), so
several apps in one process (tests) never share or clash over counters. Counters
describe this process; the ``batchd_batches`` and ``batchd_queue_depth`` gauges
are read from the store at scrape time and so describe every worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from batchd.states import BatchStatus
from batchd.store.key_records import TenantUsage
from batchd.store.records import BatchRecord

BATCH_STATUSES: tuple[str, ...] = tuple(BatchStatus)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BACKEND_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

StoreGauges = Callable[[], Awaitable[tuple[dict[str, int], int]]]
"""Returns ``(batches per status, request lines not yet run)``."""
UsageByKey = Callable[[], Awaitable[Mapping[str, TenantUsage]]]
"""Usage per API key name (apikeys/directory.py ``KeyDirectory.usage``)."""
LimitsSnapshot = Callable[[], Mapping[str, Mapping[str, Any]]]
"""Per backend: ``limit``, ``ceiling``, ``in_flight``, ``server_queue``, ``server_running``
(engine/limits.py ``Limits.snapshot``)."""


class Metrics:
    """The metric families; also an :class:`~batchd.engine.events.EngineObserver`."""

    def __init__(self) -> None:
        self._request_children: dict[tuple[str, str, int | None], tuple[Any, Any]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.http_requests = Counter(
            "batchd_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=reg,
        )
        self.http_seconds = Histogram(
            "batchd_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=reg,
        )
        self.backend_requests = Counter(
            "batchd_backend_requests",
            "Tries sent to a backend, by answer status ('none': no answer came).",
            ["backend", "endpoint", "status"],
            registry=reg,
        )
        self.backend_seconds = Histogram(
            "batchd_backend_request_duration_seconds",
            "Latency of one try against a backend.",
            ["backend", "endpoint"],
            buckets=_BACKEND_BUCKETS,
            registry=reg,
        )
        self.backend_retries = Counter(
            "batchd_backend_retries",
            "Tries that failed and will be retried, by backend and status ('none': no answer).",
            ["backend", "status"],
            registry=reg,
        )
        self.backend_rate_limited = Counter(
            "batchd_backend_rate_limited",
            "429 (rate limited) answers from a backend.",
            ["backend"],
            registry=reg,
        )
        self.lines_processed = Counter(
            "batchd_lines_processed",
            "Request lines whose final outcome was recorded (ok or failed).",
            registry=reg,
        )
        self.lines_failed = Counter(
            "batchd_lines_failed",
            "Request lines whose final outcome was a failure (error file).",
            registry=reg,
        )
        self.batches_finished = Counter(
            "batchd_batches_finished",
            "Batches that reached a terminal status in this process.",
            ["status"],
            registry=reg,
        )
        self.batches = Gauge(
            "batchd_batches",
            "Batches by status, all tenants (read from the store at scrape time).",
            ["status"],
            registry=reg,
        )
        self.queue_depth = Gauge(
            "batchd_queue_depth",
            "Request lines not yet run in running batches (read from the store at scrape time).",
            registry=reg,
        )
        self.webhook_deliveries = Counter(
            "batchd_webhook_deliveries",
            "Webhook delivery attempts by result (delivered, retry, gave_up, dropped).",
            ["result"],
            registry=reg,
        )
        self.backend_limit = Gauge(
            "batchd_backend_concurrency_limit",
            "Tries this process may have at a backend now (capacity-seeking limit).",
            ["backend"],
            registry=reg,
        )
        self.backend_ceiling = Gauge(
            "batchd_backend_concurrency_ceiling",
            "This process's share of the backend's configured concurrency ceiling.",
            ["backend"],
            registry=reg,
        )
        self.backend_in_flight = Gauge(
            "batchd_backend_in_flight",
            "Tries this process has at a backend now.",
            ["backend"],
            registry=reg,
        )
        self.backend_server_queue = Gauge(
            "batchd_backend_server_queue",
            "Requests waiting in the backend's own queue: its load gauge when it publishes "
            "one, else batchd's estimate from answer timings.",
            ["backend"],
            registry=reg,
        )
        self.backend_server_running = Gauge(
            "batchd_backend_server_running",
            "Requests the backend says it is running (only for servers that publish it).",
            ["backend"],
            registry=reg,
        )
        self._store_gauges: StoreGauges | None = None
        self._limits: LimitsSnapshot | None = None
        self._usage_source: UsageByKey | None = None
        self.usage = _UsageCollector()
        reg.register(self.usage)

    def bind_store(self, gauges: StoreGauges) -> None:
        """Where the scrape-time gauges come from (bound once the store is open)."""
        self._store_gauges = gauges

    def bind_usage(self, usage: UsageByKey) -> None:
        """Where usage per key comes from (read from the store at scrape time)."""
        self._usage_source = usage

    def bind_limits(self, snapshot: LimitsSnapshot) -> None:
        """Where the per-backend concurrency gauges come from (the worker's limits)."""
        self._limits = snapshot

    def _refresh_limits(self) -> None:
        if self._limits is None:
            return
        for name, snap in self._limits().items():
            self.backend_limit.labels(name).set(snap["limit"])
            self.backend_ceiling.labels(name).set(snap["ceiling"])
            self.backend_in_flight.labels(name).set(snap["in_flight"])
            self.backend_server_queue.labels(name).set(snap["server_queue"])
            if snap.get("server_running") is not None:
                self.backend_server_running.labels(name).set(snap["server_running"])

    async def refresh(self) -> None:
        """Re-read the store and limits gauges; called on every scrape."""
        self._refresh_limits()
        if self._usage_source is not None:
            self.usage.by_key = dict(await self._usage_source())
        if self._store_gauges is None:
            return
        counts, pending = await self._store_gauges()
        for status in {*BATCH_STATUSES, *counts}:
            self.batches.labels(status).set(counts.get(status, 0))
        self.queue_depth.set(pending)

    def webhook_result(self, result: str) -> None:
        self.webhook_deliveries.labels(result).inc()

    # ---------------------------------------------------- engine observer

    def request_finished(
        self, *, backend: str, endpoint: str, status: int | None, seconds: float, attempt: int
    ) -> None:
        # Called once per request: keep the labelled children instead of resolving
        # labels (a lock and a validation) every time.
        key = (backend, endpoint, status)
        children = self._request_children.get(key)
        if children is None:
            code = "none" if status is None else str(status)
            children = (
                self.backend_requests.labels(backend, endpoint, code),
                self.backend_seconds.labels(backend, endpoint),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if status == 429:
            self.backend_rate_limited.labels(backend).inc()

    def request_retried(self, *, backend: str, status: int | None) -> None:
        self.backend_retries.labels(backend, "none" if status is None else str(status)).inc()

    def line_recorded(self, *, batch_id: str, ok: bool) -> None:
        self.lines_processed.inc()
        if not ok:
            self.lines_failed.inc()

    def batch_finished(self, batch: BatchRecord) -> None:
        self.batches_finished.labels(batch.status).inc()


class _UsageCollector(Collector):
    """Usage per API key, by key name (never the secret), summed over every batch the
    key ever ran: totals read from the store, so they describe every worker."""

    _FAMILIES = (
        ("batchd_key_batches", "Batches created with the key.", "batches"),
        ("batchd_key_requests", "Request lines of the key run to an outcome.", "requests"),
        ("batchd_key_input_tokens", "Input (prompt) tokens of the key's requests.", "input_tokens"),
        ("batchd_key_output_tokens", "Output tokens of the key's requests.", "output_tokens"),
    )

    def __init__(self) -> None:
        self.by_key: dict[str, TenantUsage] = {}

    def collect(self) -> list[Metric]:
        families: list[Metric] = []
        for name, doc, attr in self._FAMILIES:
            family = CounterMetricFamily(name, doc, labels=["key"])
            for key, used in sorted(self.by_key.items()):
                family.add_metric([key], getattr(used, attr))
            families.append(family)
        return families

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(name, doc, labels=["key"]) for name, doc, _ in self._FAMILIES]
