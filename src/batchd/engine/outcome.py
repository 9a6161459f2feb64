"""Output and error file lines, in OpenAI's exact shape.

``{"id": "batch_req_…", "custom_id": …, "response": {"status_code", "request_id",
"body"} | null, "error": {"code", "message"} | null}``

The upstream's body is spliced in as the bytes it sent (after checking it parses),
so answers reach the output file exactly as the model server wrote them.
"""

from __future__ import annotations

from typing import Any

import orjson

from batchd.errors import error_body
from batchd.ids import new_request_id
from batchd.store.records import Usage


def response_line(custom_id: str, status: int, request_id: str, body: bytes) -> bytes:
    return b"".join(
        (
            b'{"id":',
            orjson.dumps(new_request_id()),
            b',"custom_id":',
            orjson.dumps(custom_id),
            b',"response":{"status_code":',
            str(status).encode(),
            b',"request_id":',
            orjson.dumps(request_id),
            b',"body":',
            body,
            b'},"error":null}',
        )
    )


def error_line(custom_id: str, code: str, message: str) -> bytes:
    return orjson.dumps(
        {
            "id": new_request_id(),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    )


def parse_body(raw: bytes) -> tuple[bytes, Any]:
    """The body to splice (valid JSON bytes) and its parsed value.

    A body that is not JSON (an HTML error page from a proxy, say) is wrapped as an
    OpenAI-shaped error object so the output line stays valid JSON.
    """
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        parsed = None
    if parsed is None:
        text = raw[:2000].decode("utf-8", "replace")
        parsed = error_body(
            f"The model server answered with a non-JSON body: {text}",
            error_type="upstream_error",
            code="invalid_upstream_response",
        )
        return orjson.dumps(parsed), parsed
    return raw, parsed


def usage_of(body: Any) -> Usage | None:
    """Token usage of one answer, whichever endpoint's shape it has."""
    if not isinstance(body, dict):
        return None
    u = body.get("usage")
    if not isinstance(u, dict):
        return None
    prompt = _int(u.get("prompt_tokens", u.get("input_tokens")))
    completion = _int(u.get("completion_tokens", u.get("output_tokens")))
    in_details = u.get("prompt_tokens_details") or u.get("input_tokens_details") or {}
    out_details = u.get("completion_tokens_details") or u.get("output_tokens_details") or {}
    total = _int(u.get("total_tokens")) or prompt + completion
    return Usage(
        input_tokens=prompt,
        cached_tokens=_int(in_details.get("cached_tokens")) if isinstance(in_details, dict) else 0,
        output_tokens=completion,
        reasoning_tokens=(
            _int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
        ),
        total_tokens=total,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
