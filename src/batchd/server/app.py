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

from batchd.backends.registry import build_router
from batchd.blobs.local import LocalBlobStore
from batchd.engine.worker import Worker, WorkerOptions
from batchd.errors import BatchdError
from batchd.retry import RetryPolicy
from batchd.server.auth import KeyRing
from batchd.server.routes import router as api_routes
from batchd.server.state import AppState
from batchd.services.batches import BatchService
from batchd.services.files import FileService
from batchd.settings import Settings
from batchd.store.sql import SqlStore

log = logging.getLogger("batchd.server")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = SqlStore(
            settings.resolved_database_url(), sqlite_synchronous=settings.sqlite_synchronous
        )
        await store.open()
        blobs = LocalBlobStore(settings.data_dir)
        router = build_router(settings)
        worker: Worker | None = None
        if settings.worker:
            worker = Worker(
                store=store,
                blobs=blobs,
                router=router,
                policy=RetryPolicy(
                    max_attempts=settings.max_attempts,
                    base=settings.retry_base,
                    cap=settings.retry_cap,
                ),
                options=WorkerOptions(
                    lease_seconds=settings.lease_seconds,
                    poll_interval=settings.poll_interval,
                    shard_size=settings.shard_size,
                    max_tasks=settings.max_tasks_per_batch,
                    max_errors=settings.max_validation_errors,
                    max_line_bytes=settings.max_batch_file_bytes,
                    cancel_grace=settings.cancel_grace,
                ),
            )
        app.state.keyring = KeyRing(settings.api_keys)
        app.state.batchd = AppState(
            settings=settings,
            files=FileService(store=store, blobs=blobs, settings=settings),
            batches=BatchService(
                store=store, settings=settings, notify=worker.wake if worker else lambda: None
            ),
            router=router,
            worker=worker,
        )
        if not settings.api_keys:
            log.warning("no API keys configured: the server is open to anyone who can reach it")
        # Objects alive after start-up live as long as the process: keep the cyclic
        # GC from re-scanning them on every collection (a measurable cost per request).
        gc.collect()
        gc.freeze()
        if worker is not None:
            worker.start()
        log.info(
            "batchd ready (data dir %s, %s)",
            settings.data_dir,
            "worker on" if worker else "API only",
        )
        try:
            yield
        finally:
            log.info("shutting down")
            if worker is not None:
                await worker.stop()
            await router.aclose()
            await blobs.close()
            await store.close()

    app = FastAPI(
        title="batchd",
        version="0.1.0",
        summary="OpenAI-compatible Files and Batches API",
        lifespan=lifespan,
    )
    app.include_router(api_routes)
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
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
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": "invalid_value",
            }
        }
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail) if exc.detail else "Request failed."
        if exc.status_code == 404:
            message = "Unknown route."
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        body = {
            "error": {
                "message": "The server had an error processing your request.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        return JSONResponse(body, status_code=500)
