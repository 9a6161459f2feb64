"""OpenAI response objects, built as plain dicts (serialised with orjson by the backend).

Only the shapes live here; what goes in them is computed by the engines.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

JSON = dict[str, Any]


def new_id(prefix: str) -> str:
    """An id in OpenAI's style, e.g. ``chatcmpl-…`` (random, URL-safe)."""
    return prefix + secrets.token_urlsafe(21).replace("-", "a").replace("_", "b")


def usage(prompt_tokens: int, completion_tokens: int) -> JSON:
    """The ``usage`` object of a completion."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(
    model: str, choices: list[JSON], prompt_tokens: int, completion_tokens: int
) -> JSON:
    """A ``chat.completion`` object."""
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
        "system_fingerprint": None,
    }


def chat_choice(
    index: int,
    content: str | None,
    finish_reason: str,
    tool_calls: list[JSON] | None = None,
) -> JSON:
    """One choice of a ``chat.completion``."""
    message: JSON = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}


def tool_call(name: str, arguments: str) -> JSON:
    """One entry of ``message.tool_calls``."""
    return {
        "id": new_id("call_"),
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def text_completion(
    model: str, choices: list[JSON], prompt_tokens: int, completion_tokens: int
) -> JSON:
    """A ``text_completion`` object (``/v1/completions``)."""
    return {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
        "system_fingerprint": None,
    }


def text_choice(index: int, text: str, finish_reason: str) -> JSON:
    """One choice of a ``text_completion``."""
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def embedding_list(model: str, vectors: list[Any], prompt_tokens: int) -> JSON:
    """The answer of ``/v1/embeddings``: ``vectors`` are lists of floats or base64 strings."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def moderation(model: str, results: list[JSON]) -> JSON:
    """The answer of ``/v1/moderations``."""
    return {"id": new_id("modr-"), "model": model, "results": results}
