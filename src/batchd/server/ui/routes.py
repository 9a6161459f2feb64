"""``/ui``: the dashboard page and its two JSON helpers.

The page itself (HTML, JS, CSS) is served without a key: it holds no data. Every
call it makes carries the user's key as a Bearer token, and ``/ui/api/...`` is
tenant-scoped exactly like ``/v1``: a key sees only its own batches.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from batchd.apikeys.directory import KeyDirectory
from batchd.errors import NotFound
from batchd.server.auth import KeyRing, request_tenant
from batchd.server.state import AppState, app_state
from batchd.server.ui.errors import ErrorSummaries, ResultSource
from batchd.server.ui.views import backend_views, cost, progress
from batchd.server.wire import batch_object
from batchd.services.files import FileService
from batchd.settings import ModelPrice
from batchd.store.records import BatchRecord

_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


@dataclass
class UiState:
    errors: ErrorSummaries
    prices: dict[str, ModelPrice]


def build_ui_state(
    *, files: FileService, results: ResultSource, prices: dict[str, ModelPrice]
) -> UiState:
    async def file_bytes(tenant: str, file_id: str) -> AsyncIterator[bytes]:
        _, body = await files.content(tenant, file_id)
        async for chunk in body:
            yield chunk

    return UiState(errors=ErrorSummaries(results=results, file_bytes=file_bytes), prices=prices)


async def ui_state(request: Request) -> UiState:
    state: UiState = request.app.state.ui
    return state


router = APIRouter(include_in_schema=False)
Tenant = Annotated[str, Depends(request_tenant)]
State = Annotated[AppState, Depends(app_state)]
Ui = Annotated[UiState, Depends(ui_state)]


# ------------------------------------------------------------------ the page


@router.get("/ui")
async def ui_root() -> RedirectResponse:
    # Relative, so the page also works behind a proxy that adds a path prefix.
    return RedirectResponse("ui/", status_code=307)


@router.get("/ui/")
async def ui_index() -> Response:
    return _asset("index.html")


@router.get("/ui/{asset}")
async def ui_asset(asset: str) -> Response:
    if asset not in _ASSETS:
        raise NotFound("No such dashboard file.", code="not_found")
    return _asset(asset)


def _asset(name: str) -> Response:
    data = (resources.files("batchd.server.ui") / "static" / name).read_bytes()
    return Response(data, media_type=_ASSETS[name], headers={"cache-control": "no-cache"})


# ------------------------------------------------------------------- helpers


@router.get("/ui/api/info")
async def ui_info(request: Request) -> dict[str, Any]:
    """Needs no key: tells the page whether to ask for one."""
    ring: KeyRing = request.app.state.keyring
    return {"auth_required": not ring.open}


@router.get("/ui/api/batches")
async def ui_batches(
    tenant: Tenant, state: State, ui: Ui, after: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """``/v1/batches``, each batch with its progress, ETA and cost."""
    page = await state.batches.list(tenant, after=after, limit=limit)
    now = time.time()
    data = [_view(rec, ui, now) for rec in page.items]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["batch"]["id"] if data else None,
        "last_id": data[-1]["batch"]["id"] if data else None,
        "has_more": page.has_more,
    }


@router.get("/ui/api/batches/{batch_id}")
async def ui_batch(batch_id: str, tenant: Tenant, state: State, ui: Ui) -> dict[str, Any]:
    return _view(await state.batches.get(tenant, batch_id), ui, time.time())


@router.get("/ui/api/batches/{batch_id}/errors")
async def ui_batch_errors(batch_id: str, tenant: Tenant, state: State, ui: Ui) -> dict[str, Any]:
    """The batch's failed lines (or validation errors) counted by error code."""
    rec = await state.batches.get(tenant, batch_id)
    summary = await ui.errors.summarise(rec)
    return {"batch_id": rec.id, "by_code": summary.by_code, "source": summary.source}


@router.get("/ui/api/backends")
async def ui_backends(tenant: Tenant, state: State) -> dict[str, Any]:
    """Per backend: the concurrency limit, tries in flight and the server's queue."""
    snapshot = state.limits()
    return {"object": "list", "data": [dataclasses.asdict(v) for v in backend_views(snapshot)]}


@router.get("/ui/api/usage")
async def ui_usage(tenant: Tenant, request: Request) -> dict[str, Any]:
    """The signed-in key: its name, limits, weight and what its batches have used."""
    keys: KeyDirectory = request.app.state.keys
    key, limits = keys.key_for(tenant), keys.limits_for(tenant)
    return {
        "key": keys.name_for(tenant),
        "weight": keys.weight(tenant),
        "max_enqueued_tokens": limits.max_tokens,
        "max_enqueued_requests": limits.max_requests,
        "last_used_at": key.last_used_at if key is not None else None,
        **dataclasses.asdict(await keys.usage_of(tenant)),
    }


def _view(rec: BatchRecord, ui: UiState, now: float) -> dict[str, Any]:
    return {
        "batch": batch_object(rec).model_dump(mode="json"),
        "progress": dataclasses.asdict(progress(rec, now)),
        "cost": dataclasses.asdict(cost(rec, ui.prices)),
    }
