"""The app factory: wires settings, store, storage, backends and worker together."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from batchd.engine.runtime import Runtime
from batchd.errors import BatchdError, InvalidRequest, error_body
from batchd.observability import HttpMetricsMiddleware, Metrics
from batchd.observability import router as metrics_routes
from batchd.server.auth import KeyRing
from batchd.server.engine_process import EngineProcesses
from batchd.server.routes import router as api_routes
from batchd.server.state import AppState
from batchd.server.ui import router as ui_routes
from batchd.server.ui.routes import build_ui_state
from batchd.server.uploads_routes import router as upload_routes
from batchd.services.batches import BatchService
from batchd.services.files import FileService
from batchd.services.idempotency import Idempotency
from batchd.services.uploads import UploadService
from batchd.settings import Settings
from batchd.webhooks import build_dispatcher

log = logging.getLogger("batchd.server")


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics() if settings.metrics_enabled else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Events come from the engine (here, or in its child process): none, nothing to send.
        webhooks = (
            build_dispatcher(settings, on_result=metrics.webhook_result if metrics else None)
            if settings.worker
            else None
        )
        in_child = settings.worker and settings.engine_process
        runtime = await Runtime.open(
            settings,
            with_worker=settings.worker and not in_child,
            observers=[metrics, webhooks],
            companions=[webhooks],
        )
        store, worker = runtime.store, runtime.worker
        engine: EngineProcesses | None = None
        if in_child:
            engine = EngineProcesses(settings, lookup=lambda b: store.get_batch(b, tenant=None))
            for observer in (metrics, webhooks):
                if observer is not None:
                    engine.observers.add(observer)
        limits = worker.limits.snapshot if worker else engine.limits_snapshot if engine else dict
        if metrics is not None:
            metrics.bind_store(store.batch_gauges)
            metrics.bind_limits(limits)
            metrics.bind_usage(runtime.keys.usage)
        app.state.keys = runtime.keys
        app.state.keyring = KeyRing(settings.api_keys, runtime.keys)
        app.state.batchd = AppState(
            settings=settings,
            files=FileService(store=store, blobs=runtime.blobs, settings=settings),
            batches=BatchService(
                store=store,
                settings=settings,
                notify=worker.wake if worker else engine.wake if engine else lambda: None,
            ),
            router=runtime.router,
            worker=worker,
            limits=limits,
            uploads=UploadService(store=store, blobs=runtime.blobs, settings=settings),
            idempotency=Idempotency(store, ttl=settings.idempotency_ttl),
        )
        files = app.state.batchd.files
        app.state.ui = build_ui_state(
            files=files, results=store.iter_results, prices=settings.prices
        )
        if app.state.keyring.open:
            log.warning(
                "no API keys configured (--api-key, or batchd keys create): the server is "
                "open to anyone who can reach it until one exists"
            )
        # Objects alive after start-up live as long as the process: keep the cyclic
        # GC from re-scanning them on every collection (a measurable cost per request).
        gc.collect()
        gc.freeze()
        runtime.start()
        if engine is not None:
            await engine.start()
        log.info(
            "batchd ready (data dir %s, %s)",
            settings.data_dir,
            "engine process" if engine else "worker on" if worker else "API only",
        )
        try:
            yield
        finally:
            log.info("shutting down")
            if engine is not None:
                await engine.stop()  # drains the child first: its events still reach webhooks
            await runtime.close()

    app = FastAPI(
        title="batchd",
        version="0.1.0",
        summary="OpenAI-compatible Files and Batches API",
        lifespan=lifespan,
    )
    app.include_router(api_routes)
    app.include_router(upload_routes)
    if metrics is not None:
        app.state.metrics = metrics
        app.include_router(metrics_routes)
        app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    if settings.ui_enabled:
        app.include_router(ui_routes)
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    # Every answer below renders through batchd.errors, the one error body builder.
    @app.exception_handler(BatchdError)
    async def batchd_error(_request: Request, exc: BatchdError) -> JSONResponse:
        return JSONResponse(exc.to_body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        message = first.get("msg", "Invalid request.")
        if param:
            message = f"{message}: '{param}'."
        error = InvalidRequest(message, param=param, code="invalid_value")
        return JSONResponse(error.to_body(), status_code=error.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail) if exc.detail else "Request failed."
        if exc.status_code == 404:
            message = "Unknown route."
        return JSONResponse(error_body(message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        error = BatchdError("The server had an error processing your request.")
        return JSONResponse(error.to_body(), status_code=error.status_code)
