"""The seam between the batch engine and whatever answers a request.

A backend takes one request line's ``body`` (raw JSON bytes, exactly as the user
wrote it) for one endpoint and returns the answer as raw JSON bytes with an HTTP
status. It never raises for an answer the model server gave (a 400 or a 500 is
a :class:`BackendResponse`); it raises :class:`BackendUnavailable` only when no
answer came at all (connection refused or dropped, timeout), which the engine
treats as retryable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from batchd.errors import error_json


@dataclass(frozen=True, slots=True)
class BackendResponse:
    """One answer from a backend."""

    status_code: int
    """HTTP status of the answer (200 for success)."""
    body: bytes
    """The answer's JSON body, as bytes."""
    request_id: str
    """The upstream's request id (``x-request-id``) or one we made up."""
    retry_after: float | None = None
    """Seconds the upstream asked us to wait (``Retry-After``), if any."""


class BackendUnavailable(Exception):
    """No answer came: connection refused or dropped, or the request timed out."""

    def __init__(self, message: str, *, kind: str = "connection_error") -> None:
        super().__init__(message)
        self.kind = kind
        """``connection_error`` or ``timeout``: reported in the error line if retries run out."""


@runtime_checkable
class Backend(Protocol):
    """Something that can answer OpenAI-shaped requests."""

    name: str

    def model_ids(self) -> list[str]:
        """The concrete model ids this backend serves, for ``GET /v1/models``."""
        ...

    async def send(self, endpoint: str, body: bytes) -> BackendResponse:
        """Answer one request. ``endpoint`` is e.g. ``/v1/chat/completions``."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and models."""
        ...


def error_body(
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    """An OpenAI-shaped error body, for backends that refuse a request themselves."""
    return error_json(message, error_type=type_, param=param, code=code)
