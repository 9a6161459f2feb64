"""HTTP routes of the Uploads API: parse, call the upload service, shape the answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from batchd.errors import InvalidRequest, PayloadTooLarge
from batchd.server.multipart import receive_upload
from batchd.server.routes import IdempotencyKey, State, Tenant, _errors
from batchd.server.wire import file_object
from batchd.store.records import FileRecord
from batchd.store.upload_records import UploadRecord
from batchd.uploads_protocol import (
    Upload,
    UploadCompleteRequest,
    UploadCreateRequest,
    UploadPart,
)

router = APIRouter(responses=_errors(400, 401))

_PART_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def upload_object(rec: UploadRecord, file: FileRecord | None = None) -> Upload:
    return Upload(
        id=rec.id,
        bytes=rec.bytes,
        created_at=rec.created_at,
        expires_at=rec.expires_at,
        filename=rec.filename,
        purpose=rec.purpose,
        status=rec.status,
        file=file_object(file) if file is not None else None,
    )


@router.post("/v1/uploads", responses=_errors(409))
async def create_upload(
    body: UploadCreateRequest, tenant: Tenant, state: State, idempotency_key: IdempotencyKey = None
) -> Upload:
    async def create() -> tuple[str, dict[str, Any]]:
        rec = await state.uploads.create(
            tenant,
            size=body.bytes,
            filename=body.filename,
            mime_type=body.mime_type,
            purpose=body.purpose,
            expires_after=(
                (body.expires_after.anchor, body.expires_after.seconds)
                if body.expires_after
                else None
            ),
        )
        return rec.id, upload_object(rec).model_dump(mode="json")

    answer = await state.idempotency.run(
        tenant, idempotency_key, kind="upload", request=body.model_dump(mode="json"), create=create
    )
    return Upload.model_validate(answer)


@router.post(
    "/v1/uploads/{upload_id}/parts", openapi_extra=_PART_SCHEMA, responses=_errors(404, 409, 413)
)
async def add_upload_part(
    upload_id: str, request: Request, tenant: Tenant, state: State
) -> UploadPart:
    length = request.headers.get("content-length")
    limit = state.settings.max_upload_part_bytes
    if length and length.isdigit() and int(length) > limit + 1024 * 1024:
        raise PayloadTooLarge(
            f"Upload parts may be at most {limit} bytes.", code="part_too_large", param="data"
        )
    part = await state.uploads.begin_part(tenant, upload_id)
    try:
        form = await receive_upload(request, part, file_field="data", require_filename=False)
        if form.filename is None:
            raise InvalidRequest(
                "Missing required parameter: 'data'.",
                param="data",
                code="missing_required_parameter",
            )
        rec = await state.uploads.finish_part(part)
    except BaseException:
        await part.abort()
        raise
    return UploadPart(id=rec.id, created_at=rec.created_at, upload_id=rec.upload_id)


@router.post("/v1/uploads/{upload_id}/complete", responses=_errors(404, 409))
async def complete_upload(
    upload_id: str, body: UploadCompleteRequest, tenant: Tenant, state: State
) -> Upload:
    rec, file = await state.uploads.complete(
        tenant, upload_id, part_ids=body.part_ids, md5=body.md5
    )
    return upload_object(rec, file)


@router.post("/v1/uploads/{upload_id}/cancel", responses=_errors(404, 409))
async def cancel_upload(upload_id: str, tenant: Tenant, state: State) -> Upload:
    return upload_object(await state.uploads.cancel(tenant, upload_id))
