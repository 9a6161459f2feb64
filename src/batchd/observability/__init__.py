"""Prometheus metrics: what the engine and the HTTP API are doing, at ``/metrics``.

``metrics``     the metric families, and the engine observer that feeds them
``http``        ASGI middleware counting requests by route template
``exposition``  the ``GET /metrics`` route (refreshes store gauges at scrape time)
"""

from batchd.observability.exposition import router
from batchd.observability.http import HttpMetricsMiddleware, route_label
from batchd.observability.metrics import Metrics

__all__ = ["HttpMetricsMiddleware", "Metrics", "route_label", "router"]
