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
carries ``code`` and ``param`` (and may override the status and type, as the
embedded backend's ``RequestError`` does).

:func:`error_body` is the one place the OpenAI error body
``{"error": {"message", "type", "param", "code"}}`` is built: the server's
exception handlers, the backends that refuse a request themselves, and the
engine's stand-in for an upstream answer that is not JSON all render through it,
so every error a client sees has the same four keys in the same order.
"""

from __future__ import annotations

from typing import Any

import orjson


def error_body(
    message: str,
    *,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """The OpenAI-shaped error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_json(
    message: str,
    *,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> bytes:
    """:func:`error_body` as JSON bytes (what a backend answers with)."""
    return orjson.dumps(error_body(message, error_type=error_type, param=param, code=code))


class BatchdError(Exception):
    """Root of every error batchd reports to a client."""

    status_code: int = 500
    """HTTP status; a class default, which an instance may override."""
    error_type: str = "server_error"
    """OpenAI's error ``type``; a class default, which an instance may override."""

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param

    def to_body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body."""
        return error_body(
            self.message, error_type=self.error_type, param=self.param, code=self.code
        )

    def to_json(self) -> bytes:
        """:meth:`to_body` as JSON bytes."""
        return orjson.dumps(self.to_body())


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
