"""Wire models of the Uploads API, field for field as ``openai.types.Upload``,
``openai.types.uploads.UploadPart`` and the create/complete request bodies."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from batchd.protocol import FileObject, Text


class UploadExpiresAfter(BaseModel):
    """When the File the upload becomes expires (as on ``POST /v1/files``)."""

    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: int = Field(ge=0, le=2**62)


class UploadCreateRequest(BaseModel):
    """Body of ``POST /v1/uploads``."""

    model_config = ConfigDict(extra="ignore")

    bytes: int = Field(ge=0, le=2**62, description="The size of the whole file, in bytes.")
    filename: Text
    mime_type: Text
    purpose: Text
    expires_after: UploadExpiresAfter | None = None


class UploadCompleteRequest(BaseModel):
    """Body of ``POST /v1/uploads/{upload_id}/complete``."""

    model_config = ConfigDict(extra="ignore")

    part_ids: list[Text]
    md5: Text | None = None


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
