"""``GET /metrics``: the Prometheus text format.

Not behind API keys (scrapers rarely carry them, and the numbers are
tenant-free aggregates): firewall the port, or disable with
``BATCHD_METRICS_ENABLED=false``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from batchd.observability.metrics import Metrics

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    m: Metrics = request.app.state.metrics
    await m.refresh()
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
