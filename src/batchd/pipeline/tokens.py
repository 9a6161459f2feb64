"""Counting prompt tokens before a run, offline.

``tiktoken`` is used only when it is installed *and* its encoding is already on
disk (it downloads encodings on first use, and a batch machine may have no
internet); otherwise the count is an estimate of one token per four characters,
and :attr:`TokenCounter.method` says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CHARS_PER_TOKEN = 4


class TokenCounter:
    """Counts tokens of request text; ``method`` names how."""

    def __init__(self, model: str | None = None) -> None:
        self._encode: Callable[[str], list[int]] | None = _offline_tiktoken(model)
        self.method = (
            "tiktoken" if self._encode is not None else f"estimate (characters / {CHARS_PER_TOKEN})"
        )

    def count(self, text: str) -> int:
        if self._encode is not None:
            return len(self._encode(text))
        return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN

    def count_body(self, body: dict[str, Any]) -> int:
        return self.count(request_text(body))


def request_text(body: dict[str, Any]) -> str:
    """The text a request sends to the model (messages, prompt, input, instructions)."""
    parts: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    for key in ("prompt", "input", "instructions"):
        value = body.get(key)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts.extend(str(v) for v in value)
    return "\n".join(parts)


def _offline_tiktoken(model: str | None) -> Callable[[str], list[int]] | None:
    try:
        import tiktoken  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    try:
        encoding = (
            tiktoken.encoding_for_model(model) if model else tiktoken.get_encoding("o200k_base")
        )
    except Exception:
        try:
            encoding = tiktoken.get_encoding("o200k_base")
        except Exception:
            return None
    encode: Callable[[str], list[int]] = encoding.encode
    return encode
