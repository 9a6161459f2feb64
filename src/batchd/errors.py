"""The error tree. Every failure the API can report is a :class:`BatchdError`.

::

    BatchdError                      500 server_error
    ├── InvalidRequest               400 invalid_request_error
    ├── AuthenticationFailed         401 invalid_request_error (invalid_api_key)
    ├── NotFound                     404 invalid_request_error
    ├── Conflict                     409 invalid_request_error
    ├── PayloadTooLarge              413 invalid_request_error
    └── RateLimited                  429 rate_limit_error

Each subclass carries the HTTP status and OpenAI error ``type``; an instance
carries ``code`` and ``param``. One handler in the server renders them as
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class BatchdError(Exception):
    """Root of every error batchd reports to a client."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param

    def to_body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(BatchdError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(BatchdError):
    status_code = 401
    error_type = "invalid_request_error"


class NotFound(BatchdError):
    status_code = 404
    error_type = "invalid_request_error"


class Conflict(BatchdError):
    status_code = 409
    error_type = "invalid_request_error"


class PayloadTooLarge(BatchdError):
    status_code = 413
    error_type = "invalid_request_error"


class RateLimited(BatchdError):
    status_code = 429
    error_type = "rate_limit_error"
