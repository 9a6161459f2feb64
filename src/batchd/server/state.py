"""What the routes need, built once per app and reached through a dependency."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from batchd.backends.router import Router
from batchd.engine.worker import Worker
from batchd.services.batches import BatchService
from batchd.services.files import FileService
from batchd.services.idempotency import Idempotency
from batchd.services.uploads import UploadService
from batchd.settings import Settings


@dataclass
class AppState:
    settings: Settings
    files: FileService
    batches: BatchService
    router: Router
    worker: Worker | None
    uploads: UploadService
    idempotency: Idempotency
    limits: Callable[[], Mapping[str, Mapping[str, Any]]] = dict
    """Per backend dispatch state (engine/limits.py ``Limits.snapshot``), from the worker
    in this process or as the engine child last reported it; empty without an engine."""


async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.batchd
    return state
