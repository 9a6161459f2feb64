"""HTTP routes: parse the request, call a service, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from batchd.errors import InvalidRequest, NotFound, PayloadTooLarge
from batchd.protocol import (
    UPLOAD_PURPOSES,
    Batch,
    BatchCreateRequest,
    BatchList,
    ErrorResponse,
    FileDeleted,
    FileList,
    FileObject,
    Model,
    ModelList,
)
from batchd.server.auth import request_tenant
from batchd.server.multipart import receive_upload
from batchd.server.state import AppState, app_state
from batchd.server.wire import batch_object, file_object


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route documents, all in OpenAI's ``{"error": {...}}`` shape."""
    what = {
        400: "Invalid request",
        401: "Missing or wrong API key",
        404: "No such object",
        409: "Not possible in the object's current state",
        413: "Upload too large",
    }
    return {s: {"model": ErrorResponse, "description": what[s]} for s in statuses}


router = APIRouter(responses=_errors(400, 401))
Tenant = Annotated[str, Depends(request_tenant)]
State = Annotated[AppState, Depends(app_state)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]

_UPLOAD_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": sorted(UPLOAD_PURPOSES)},
                        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                        "expires_after[seconds]": {
                            "type": "integer",
                            "minimum": 3600,
                            "maximum": 2_592_000,
                        },
                    },
                }
            }
        },
    }
}


@router.get("/health", include_in_schema=False)
async def health() -> dict[str, str]:
    return {"status": "ok"}


# ------------------------------------------------------------------- files


@router.post("/v1/files", openapi_extra=_UPLOAD_SCHEMA, responses=_errors(409, 413))
async def create_file(
    request: Request, tenant: Tenant, state: State, idempotency_key: IdempotencyKey = None
) -> FileObject:
    length = request.headers.get("content-length")
    limit = state.settings.max_file_bytes
    if length and length.isdigit() and int(length) > limit + 1024 * 1024:
        raise PayloadTooLarge(
            f"Upload is larger than the {limit} byte limit.", code="file_too_large", param="file"
        )
    upload = await state.files.begin_upload(tenant)
    try:
        form = await receive_upload(request, upload)
        if form.filename is None:
            raise InvalidRequest(
                "Missing required parameter: 'file'.",
                param="file",
                code="missing_required_parameter",
            )
        expires_after = _expires_after(form.fields)
        filename = form.filename

        async def create() -> tuple[str, dict[str, Any]]:
            rec = await upload.finish(
                filename=filename, purpose=form.fields.get("purpose"), expires_after=expires_after
            )
            return rec.id, file_object(rec).model_dump(mode="json")

        # The bytes are known only once streamed: a repeated key compares their digest.
        seen = {"fields": form.fields, "filename": filename, "sha256": upload.digest.hexdigest()}
        answer = await state.idempotency.run(
            tenant, idempotency_key, kind="file", request=seen, create=create
        )
    finally:
        await upload.abort()  # a no-op once finished; drops the bytes of a replay
    return FileObject.model_validate(answer)


def _expires_after(fields: dict[str, str]) -> tuple[str, int] | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if seconds is None or not seconds.strip().isdigit():
        raise InvalidRequest(
            "expires_after[seconds] must be an integer.",
            param="expires_after[seconds]",
            code="invalid_value",
        )
    return anchor or "created_at", int(seconds)


@router.get("/v1/files")
async def list_files(
    tenant: Tenant,
    state: State,
    after: str | None = None,
    limit: Annotated[int, Query()] = 10_000,
    order: str = "desc",
    purpose: str | None = None,
) -> FileList:
    page = await state.files.list(tenant, purpose=purpose, after=after, limit=limit, order=order)
    data = [file_object(r) for r in page.items]
    return FileList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=page.has_more,
    )


@router.get("/v1/files/{file_id}", responses=_errors(404))
async def retrieve_file(file_id: str, tenant: Tenant, state: State) -> FileObject:
    return file_object(await state.files.get(tenant, file_id))


@router.get(
    "/v1/files/{file_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The file's bytes",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        **_errors(404),
    },
)
async def file_content(file_id: str, tenant: Tenant, state: State) -> StreamingResponse:
    rec, body = await state.files.content(tenant, file_id)
    return StreamingResponse(
        body,
        media_type="application/octet-stream",
        headers={
            "content-length": str(rec.bytes),
            "content-disposition": f'attachment; filename="{rec.id}.jsonl"',
        },
    )


@router.delete("/v1/files/{file_id}", responses=_errors(404))
async def delete_file(file_id: str, tenant: Tenant, state: State) -> FileDeleted:
    return FileDeleted(id=await state.files.delete(tenant, file_id))


# ----------------------------------------------------------------- batches


@router.post("/v1/batches", responses=_errors(404, 409))
async def create_batch(
    body: BatchCreateRequest, tenant: Tenant, state: State, idempotency_key: IdempotencyKey = None
) -> Batch:
    if body.idempotency_key is not None and idempotency_key not in (None, body.idempotency_key):
        raise InvalidRequest(
            "The Idempotency-Key header and the idempotency_key field differ.",
            param="idempotency_key",
            code="invalid_value",
        )
    key = idempotency_key if idempotency_key is not None else body.idempotency_key

    async def create() -> tuple[str, dict[str, Any]]:
        rec = await state.batches.create(tenant, body)
        return rec.id, batch_object(rec).model_dump(mode="json")

    request = body.model_dump(mode="json", exclude={"idempotency_key"})
    answer = await state.idempotency.run(
        tenant, key, kind="batch", request=request, create=create
    )
    return Batch.model_validate(answer)


@router.get("/v1/batches")
async def list_batches(
    tenant: Tenant, state: State, after: str | None = None, limit: int = 20
) -> BatchList:
    page = await state.batches.list(tenant, after=after, limit=limit)
    data = [batch_object(r) for r in page.items]
    return BatchList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=page.has_more,
    )


@router.get("/v1/batches/{batch_id}", responses=_errors(404))
async def retrieve_batch(batch_id: str, tenant: Tenant, state: State) -> Batch:
    return batch_object(await state.batches.get(tenant, batch_id))


@router.post("/v1/batches/{batch_id}/cancel", responses=_errors(404, 409))
async def cancel_batch(batch_id: str, tenant: Tenant, state: State) -> Batch:
    return batch_object(await state.batches.cancel(tenant, batch_id))


# ------------------------------------------------------------------ models


@router.get("/v1/models")
async def list_models(_tenant: Tenant, state: State) -> ModelList:
    found = await state.router.discover()
    return ModelList(
        data=[Model(id=m, owned_by=b, endpoints=_endpoints(state, m)) for m, b in found]
    )


@router.get("/v1/models/{model_id:path}", responses=_errors(404))
async def retrieve_model(model_id: str, _tenant: Tenant, state: State) -> Model:
    route = state.router.resolve(model_id)
    if route is not None:
        return Model(
            id=model_id, owned_by=route.backend.name, endpoints=_endpoints(state, model_id)
        )
    raise NotFound(f"The model {model_id!r} does not exist.", param="model", code="model_not_found")


def _endpoints(state: AppState, model: str) -> list[str]:
    return list(state.router.endpoints_for(model))


__all__ = ["router"]
