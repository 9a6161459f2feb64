"""Batches: create, retrieve, list, cancel."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from batchd.clock import now
from batchd.errors import Conflict, InvalidRequest, NotFound
from batchd.ids import is_valid_id, new_batch_id
from batchd.protocol import BATCH_ENDPOINTS, BatchCreateRequest
from batchd.settings import Settings
from batchd.states import BatchPhase, BatchStatus
from batchd.store.base import Store
from batchd.store.records import BatchRecord, Page

MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
_WINDOW = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def window_seconds(window: str) -> int | None:
    m = _WINDOW.match(window)
    return int(m.group(1)) * _UNIT[m.group(2)] if m else None


class BatchService:
    def __init__(
        self, *, store: Store, settings: Settings, notify: Callable[[], None] = lambda: None
    ) -> None:
        self.store = store
        self.settings = settings
        self._notify = notify

    async def create(self, tenant: str, req: BatchCreateRequest) -> BatchRecord:
        if req.endpoint not in BATCH_ENDPOINTS:
            supported = ", ".join(repr(e) for e in BATCH_ENDPOINTS)
            raise InvalidRequest(
                f"Invalid value: {req.endpoint!r}. Supported values are: {supported}.",
                param="endpoint",
                code="invalid_value",
            )
        seconds = window_seconds(req.completion_window)
        if req.completion_window not in self.settings.completion_windows or seconds is None:
            raise InvalidRequest(
                f"Invalid completion_window {req.completion_window!r}; accepted: "
                f"{', '.join(self.settings.completion_windows)}.",
                param="completion_window",
                code="invalid_value",
            )
        _check_metadata(req.metadata)
        file = (
            await self.store.get_file(req.input_file_id, tenant=tenant)
            if is_valid_id(req.input_file_id)
            else None
        )
        created = now()
        if file is None:
            # As OpenAI does: the batch is created and fails at once. Another key's file
            # and a file that does not exist look the same.
            return await self._insert(
                self._record(tenant, req, created, seconds, input_file_id=req.input_file_id),
                failed_with=[_missing_file_error(req.input_file_id)],
            )
        if file.purpose != "batch":
            raise InvalidRequest(
                f"File {file.id} has purpose {file.purpose!r}; a batch needs a file uploaded "
                "with purpose 'batch'.",
                param="input_file_id",
                code="invalid_file_purpose",
            )
        return await self._insert(
            self._record(tenant, req, created, seconds, input_file_id=file.id)
        )

    @staticmethod
    def _record(
        tenant: str, req: BatchCreateRequest, created: int, seconds: int, *, input_file_id: str
    ) -> BatchRecord:
        return BatchRecord(
            id=new_batch_id(),
            tenant=tenant,
            input_file_id=input_file_id,
            endpoint=req.endpoint,
            completion_window=req.completion_window,
            status=BatchStatus.VALIDATING,
            created_at=created,
            expires_at=created + seconds,
            metadata=req.metadata,
            output_expires_after=(
                req.output_expires_after.seconds if req.output_expires_after else None
            ),
        )

    async def _insert(
        self, rec: BatchRecord, *, failed_with: list[dict[str, Any]] | None = None
    ) -> BatchRecord:
        if failed_with is not None:
            rec.status, rec.phase, rec.errors = BatchStatus.FAILED, BatchPhase.DONE, failed_with
            rec.failed_at = rec.created_at
        await self.store.insert_batch(rec)
        if failed_with is None:
            self._notify()  # work for the engine: validate it
        return rec

    async def get(self, tenant: str, batch_id: str) -> BatchRecord:
        rec = await self.store.get_batch(batch_id, tenant=tenant) if is_valid_id(batch_id) else None
        if rec is None:
            raise _no_batch(batch_id)
        return rec

    async def list(self, tenant: str, *, after: str | None, limit: int) -> Page[BatchRecord]:
        if not 1 <= limit <= 100:
            raise InvalidRequest(
                "limit must be between 1 and 100.", param="limit", code="invalid_value"
            )
        return await self.store.list_batches(tenant=tenant, after=after, limit=limit)

    async def cancel(self, tenant: str, batch_id: str) -> BatchRecord:
        await self.get(tenant, batch_id)
        rec = await self.store.request_cancel(batch_id, tenant=tenant, now=now())
        if rec is None:
            raise _no_batch(batch_id)
        if rec.status not in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
            raise Conflict(
                f"Cannot cancel a batch with status {rec.status!r}.",
                param="id",
                code="invalid_state",
            )
        self._notify()
        return rec


def _no_batch(batch_id: str) -> NotFound:
    return NotFound(f"No batch found with id '{batch_id}'.", param="id", code="batch_not_found")


def _missing_file_error(file_id: str) -> dict[str, Any]:
    return {
        "code": "invalid_request",
        "message": f"Cannot find file {file_id}, or this API key does not have access to it.",
        "param": "file_id",
        "line": None,
    }


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequest(
            f"metadata may have at most {MAX_METADATA_PAIRS} pairs.",
            param="metadata",
            code="invalid_value",
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise InvalidRequest(
                f"metadata keys may be at most {MAX_METADATA_KEY} characters.",
                param="metadata",
                code="invalid_value",
            )
        if len(value) > MAX_METADATA_VALUE:
            raise InvalidRequest(
                f"metadata values may be at most {MAX_METADATA_VALUE} characters.",
                param="metadata",
                code="invalid_value",
            )
