"""Reading one line of a batch's output or error file into an :class:`Outcome`.

What counts as *the answer* depends on the endpoint (a table of extractors);
whether it counts as a success also depends on ``finish_reason`` and, for
structured output, on the schema check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchd.pipeline.states import Answered, LineStatus
from batchd.pipeline.structured import SchemaSpec


@dataclass(frozen=True, slots=True)
class Outcome:
    custom_id: str
    status: Answered
    answer: Any = None
    """The answer: text, a parsed structured value, an embedding, a moderation result."""
    reason: str | None = None
    """Why the line failed: ``code: message``."""
    status_code: int | None = None
    body: dict[str, Any] | None = None
    """The response body as the API returned it."""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


def _chat(body: dict[str, Any]) -> tuple[Any, str | None]:
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    return message.get("content"), choice.get("finish_reason")


def _completion(body: dict[str, Any]) -> tuple[Any, str | None]:
    choice = (body.get("choices") or [{}])[0]
    return choice.get("text"), choice.get("finish_reason")


def _response(body: dict[str, Any]) -> tuple[Any, str | None]:
    parts = [
        part.get("text", "")
        for item in body.get("output") or []
        if item.get("type") == "message"
        for part in item.get("content") or []
        if part.get("type") == "output_text"
    ]
    details = body.get("incomplete_details") or {}
    finish = "length" if details.get("reason") == "max_output_tokens" else None
    return "".join(parts), finish


def _embedding(body: dict[str, Any]) -> tuple[Any, str | None]:
    data = body.get("data") or [{}]
    return data[0].get("embedding"), None


def _moderation(body: dict[str, Any]) -> tuple[Any, str | None]:
    results = body.get("results") or [None]
    return results[0], None


EXTRACTORS: dict[str, Callable[[dict[str, Any]], tuple[Any, str | None]]] = {
    "/v1/chat/completions": _chat,
    "/v1/completions": _completion,
    "/v1/responses": _response,
    "/v1/embeddings": _embedding,
    "/v1/moderations": _moderation,
}


def usage_of(body: dict[str, Any]) -> tuple[int, int, int]:
    """``(input, output, cached input)`` tokens of one response body."""
    usage = body.get("usage") or {}
    prompt = usage.get("prompt_tokens", usage.get("input_tokens")) or 0
    completion = usage.get("completion_tokens", usage.get("output_tokens")) or 0
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    return int(prompt), int(completion), int(details.get("cached_tokens") or 0)


def read_outcome(line: dict[str, Any], endpoint: str, schema: SchemaSpec | None) -> Outcome | None:
    """The outcome of one output/error line; ``None`` when the line has no custom_id."""
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str):
        return None
    response = line.get("response") or {}
    error = line.get("error")
    status_code = response.get("status_code")
    body = response.get("body") if isinstance(response.get("body"), dict) else None
    if error or status_code != 200 or body is None:
        return Outcome(
            custom_id,
            LineStatus.FAILED,
            reason=_reason(error, body, status_code),
            status_code=status_code,
            body=body,
        )
    tokens = usage_of(body)
    answer, finish = EXTRACTORS.get(endpoint, _chat)(body)
    if finish == "length":
        return Outcome(
            custom_id,
            LineStatus.LENGTH,
            answer,
            "length: the answer was cut off by the token limit",
            200,
            body,
            *tokens,
        )
    if schema is not None:
        parsed, problem = schema.parse(answer if isinstance(answer, str) else None)
        if problem is not None:
            return Outcome(custom_id, LineStatus.FAILED, answer, problem, 200, body, *tokens)
        answer = parsed
    return Outcome(custom_id, LineStatus.OK, answer, None, 200, body, *tokens)


def _reason(error: Any, body: dict[str, Any] | None, status_code: Any) -> str:
    source = error if isinstance(error, dict) else None
    if source is None and body is not None and isinstance(body.get("error"), dict):
        source = body["error"]
    if source is not None:
        code = source.get("code") or source.get("type") or f"http_{status_code}"
        return f"{code}: {source.get('message') or ''}".strip()
    return f"http_{status_code}: no response"
