"""Counting a request's prompt tokens offline, for the server's queue limits.

The server must never reach the network to count. An embedded chat model is counted
with its own tokenizer (its GGUF vocabulary); tiktoken (an optional extra) is used
only when it is installed and its encoding cache directory already holds files
(``TIKTOKEN_CACHE_DIR``, ``DATA_GYM_CACHE_DIR`` or the default under the temp dir);
otherwise a request counts one token per four characters of its text.
(The pipeline's counter, pipeline/tokens.py, builds on this module, which keeps the
engine free of the pipeline's imports.)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHARS_PER_TOKEN = 4
Encode = Callable[[str], list[int]]


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


class PromptTokens:
    """``(model, body) -> tokens``, one encoder per model, looked up once: the model's
    own tokenizer where its backend has one on disk (``tokenizer_for``: the embedded
    models), else tiktoken's if its encoding is cached, else the estimate."""

    def __init__(self, tokenizer_for: Callable[[str], Encode | None] | None = None) -> None:
        self._tokenizer_for = tokenizer_for
        self._encoders: dict[str, Encode | None] = {}

    def __call__(self, model: str, body: dict[str, Any]) -> int:
        if model not in self._encoders:
            own = self._tokenizer_for(model) if self._tokenizer_for is not None else None
            self._encoders[model] = own if own is not None else cached_tiktoken(model)
        encode = self._encoders[model]
        text = request_text(body)
        if encode is not None:
            return len(encode(text))
        return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def cached_tiktoken(model: str) -> Encode | None:
    """tiktoken's encoder for ``model`` if tiktoken is installed and its encodings are
    already on disk; None rather than let it download."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    folder = Path(cache) if cache else Path(tempfile.gettempdir()) / "data-gym-cache"
    if not folder.is_dir() or not any(folder.iterdir()):
        return None  # nothing on disk: tiktoken would download
    try:
        import tiktoken  # type: ignore[import-not-found, unused-ignore]

        encoding = tiktoken.encoding_for_model(model)
    except Exception:  # not installed, unknown model, or that encoding not cached
        return None
    encode: Encode = encoding.encode
    return encode
