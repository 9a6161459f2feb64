"""Counting prompt tokens before a run, offline.

``tiktoken`` is used only when it is installed *and* its encoding is already on
disk (it downloads encodings on first use, and a batch machine may have no
internet); otherwise the count is an estimate of one token per four characters,
and :attr:`TokenCounter.method` says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchd.tokens import CHARS_PER_TOKEN, cached_tiktoken, request_text

DEFAULT_ENCODING_MODEL = "gpt-4o"
"""Whose encoding counts a model tiktoken does not know (o200k_base)."""


class TokenCounter:
    """Counts tokens of request text; ``method`` names how."""

    def __init__(self, model: str | None = None) -> None:
        self._encode: Callable[[str], list[int]] | None = cached_tiktoken(
            model or DEFAULT_ENCODING_MODEL
        ) or cached_tiktoken(DEFAULT_ENCODING_MODEL)
        self.method = (
            "tiktoken" if self._encode is not None else f"estimate (characters / {CHARS_PER_TOKEN})"
        )

    def count(self, text: str) -> int:
        if self._encode is not None:
            return len(self._encode(text))
        return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN

    def count_body(self, body: dict[str, Any]) -> int:
        return self.count(request_text(body))


__all__ = ["CHARS_PER_TOKEN", "TokenCounter", "request_text"]
