"""Building the routing table from settings."""

from __future__ import annotations

import logging

from batchd.backends.base import Backend
from batchd.backends.http import HttpBackend
from batchd.backends.router import Route, Router
from batchd.settings import Settings

log = logging.getLogger(__name__)

# Twice the chat engine's default max_batch (32): a short line of waiting requests
# refills a slot the moment a sequence finishes, instead of a round trip later.
LOCAL_CONCURRENCY = 64


def build_router(settings: Settings) -> Router:
    routes: list[Route] = []
    for config in settings.all_backends():
        backend = HttpBackend(config)
        routes.extend(
            Route(
                pattern,
                backend,
                config.concurrency,
                background=config.background,
                slowdown=config.background_slowdown,
            )
            for pattern in config.models
        )
    fallback = None
    if settings.local_enabled:
        local = _local_backend(settings)
        if local is not None:
            # The embedded engine batches what it is given in-process: it gets its
            # configured concurrency as it is, no capacity seeking over HTTP timings.
            concurrency = int(settings.local.get("concurrency", LOCAL_CONCURRENCY))
            fallback = Route("*", local, concurrency, adaptive=False)
    return Router(routes, fallback)


def _local_backend(settings: Settings) -> Backend | None:
    try:
        from batchd.backends.local import LocalBackend, LocalModelsConfig
    except ImportError as exc:
        log.warning("embedded models unavailable (%s); install them with scripts/bootstrap.sh", exc)
        return None
    config = {k: v for k, v in settings.local.items() if k != "concurrency"}
    backend: Backend = LocalBackend(LocalModelsConfig.model_validate(config))
    return backend
