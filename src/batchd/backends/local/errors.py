"""The one exception the local backend uses to refuse a request.

Handlers raise :class:`RequestError` anywhere below :meth:`LocalBackend.send`; ``send``
turns it into an OpenAI-shaped error body with the status it carries, so a bad
request never escapes as a traceback. It is a :class:`batchd.errors.BatchdError`
whose status and type are set per instance, so its body is rendered by the same
code as every other error batchd reports (:meth:`RequestError.to_json`).
"""

from __future__ import annotations

from batchd.errors import BatchdError


class RequestError(BatchdError):
    """A request the local backend will not (or cannot) answer."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message, code=code, param=param)
        self.status_code = status
        self.error_type = type_

    @property
    def status(self) -> int:
        """The HTTP status (``status_code``, by the name ``send`` has always read)."""
        return self.status_code

    @property
    def type_(self) -> str:
        """The error ``type`` (``error_type``, by the name ``send`` has always read)."""
        return self.error_type


def unsupported(param: str, detail: str) -> RequestError:
    """A 400 for a parameter the local models do not support."""
    return RequestError(detail, param=param, code="unsupported_parameter")


def invalid(param: str, detail: str) -> RequestError:
    """A 400 for a parameter with a bad value."""
    return RequestError(detail, param=param, code="invalid_value")
