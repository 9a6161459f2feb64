"""Wire models of the Uploads API, field for field as ``openai.types.Upload``,
``openai.types.uploads.UploadPart`` and the create/complete request bodies."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from batchd.protocol import FileObject


class UploadExpiresAfter(BaseModel):
    """When the File the upload becomes expires (as on ``POST /v1/files``)."""

    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: int


class UploadCreateRequest(BaseModel):
    """Body of ``POST /v1/uploads``."""

    model_config = ConfigDict(extra="ignore")

    bytes: int = Field(description="The size of the whole file, in bytes.")
    filename: str
    mime_type: str
    purpose: str
    expires_after: UploadExpiresAfter | None = None


class UploadCompleteRequest(BaseModel):
    """Body of ``POST /v1/uploads/{upload_id}/complete``."""

    model_config = ConfigDict(extra="ignore")

    part_ids: list[str]
    md5: str | None = None


class Upload(BaseModel):
    id: str
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: Literal["pending", "completed", "cancelled", "expired"]
    file: FileObject | None = None


class UploadPart(BaseModel):
    id: str
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str
