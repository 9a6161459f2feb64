"""The one exception the local backend uses to refuse a request.

Handlers raise :class:`RequestError` anywhere below :meth:`LocalBackend.send`; ``send``
turns it into an OpenAI-shaped error body with the status it carries, so a bad
request never escapes as a traceback.
"""

from __future__ import annotations


class RequestError(Exception):
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
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.type_ = type_


def unsupported(param: str, detail: str) -> RequestError:
    """A 400 for a parameter the local models do not support."""
    return RequestError(detail, param=param, code="unsupported_parameter")


def invalid(param: str, detail: str) -> RequestError:
    """A 400 for a parameter with a bad value."""
    return RequestError(detail, param=param, code="invalid_value")
