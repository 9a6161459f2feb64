"""Wire models: the JSON objects of OpenAI's Files and Batches API, field for field.

These mirror ``openai.types`` (``FileObject``, ``Batch``, ...) and stay separate
from database rows (:mod:`batchd.store.records`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# The status type lives with the other batch states; the wire re-exports it.
from batchd.states import TERMINAL_STATUSES as TERMINAL_STATUSES
from batchd.states import BatchStatus as BatchStatus


def _utf8(value: str) -> str:
    # JSON may carry lone surrogates ("\\udb16"): text no store or answer can encode.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid UTF-8 text") from None
    return value


Text = Annotated[str, AfterValidator(_utf8)]
"""A string from a request body that can be stored and sent back as UTF-8."""

FilePurpose = Literal[
    "batch", "batch_output", "user_data", "fine-tune", "assistants", "vision", "evals"
]
UPLOAD_PURPOSES: frozenset[str] = frozenset(
    {"batch", "user_data", "fine-tune", "assistants", "vision", "evals"}
)

BATCH_ENDPOINTS: tuple[str, ...] = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    # vLLM's scoring endpoints, accepted as `vllm run-batch` accepts them (an extension).
    "/v1/score",
    "/v1/rerank",
)

REQUIRED_BODY_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    # Besides ``model``: each entry is a required field, or alternatives (one must be set).
    "/v1/responses": (("input",),),
    "/v1/chat/completions": (("messages",),),
    "/v1/embeddings": (("input",),),
    "/v1/completions": (("prompt",),),
    "/v1/moderations": (("input",),),
    "/v1/images/generations": (("prompt",),),
    "/v1/images/edits": (("image", "images"), ("prompt",)),
    "/v1/score": (("text_1", "queries"), ("text_2", "documents", "items")),
    "/v1/rerank": (("query",), ("documents",)),
}
"""What each batch endpoint's request body must carry (``missing_required_parameter``)."""


class FileObject(BaseModel):
    """A stored file (``openai.types.FileObject``)."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    """Deprecated by OpenAI, still sent."""
    status_details: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class BatchErrorData(BaseModel):
    """One validation error of a failed batch."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchErrorData] = Field(default_factory=list)


class BatchRequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class BatchUsage(BaseModel):
    """Tokens summed over every request of the batch that reported usage."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class Batch(BaseModel):
    """A batch (``openai.types.Batch``)."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    model: str | None = None
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts = Field(default_factory=BatchRequestCounts)
    usage: BatchUsage = Field(default_factory=BatchUsage)
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Batch]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class OutputExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=2_592_000)


class BatchCreateRequest(BaseModel):
    """Body of ``POST /v1/batches``."""

    # Newer SDKs may send fields this server does not know yet; they are ignored
    # rather than refused, so the official client keeps working unchanged.
    model_config = ConfigDict(extra="ignore")

    input_file_id: Text
    endpoint: Text
    completion_window: Text
    metadata: dict[Text, Text] | None = None
    output_expires_after: OutputExpiresAfter | None = None
    idempotency_key: Text | None = None
    """As the ``Idempotency-Key`` header (another OpenAI-compatible server's field)."""


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    endpoints: list[str] | None = None
    """batchd's extension: the batch endpoints this model accepts."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error answer of the API: ``{"error": {...}}``."""

    error: ErrorDetail
