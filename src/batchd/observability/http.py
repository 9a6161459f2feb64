"""Counting HTTP requests by route *template* (``/v1/batches/{batch_id}``).

A raw path would give every batch id a time series of its own; the template is
what the router matched, read from the ASGI scope once the request has been routed.
Paths no route matched share the label ``unmatched``. A plain ASGI middleware (not
``BaseHTTPMiddleware``) so streamed downloads pass straight through.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchd.observability.metrics import Metrics

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(scope: Scope) -> str:
    """The matched route's path template, or ``unmatched``."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method = scope.get("method", "GET")
            method = method if method in _METHODS else "other"
            route = route_label(scope)
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_seconds.labels(method, route).observe(time.perf_counter() - started)
