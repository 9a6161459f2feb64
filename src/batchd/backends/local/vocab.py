"""A chat model's tokenizer alone (its GGUF vocabulary, no weights), for counting.

The server's queue limits count a batch's prompt tokens while it validates; for an
embedded model its own tokenizer is on disk, so the count is exact rather than the
four-characters-a-token estimate. Loading ``vocab_only`` reads the vocabulary, not
the weights: fast, and independent of the engine's decoding context.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from batchd.backends.local.config import ChatModelConfig, resolve_model_path

Encode = Callable[[str], list[int]]


class Vocabularies:
    """One loaded vocabulary per chat model, on first use."""

    def __init__(self, models: dict[str, ChatModelConfig]) -> None:
        self._models = models
        self._loaded: dict[str, Encode | None] = {}
        self._lock = threading.Lock()

    def encoder(self, model: str) -> Encode | None:
        """``text -> token ids`` for ``model``; None when it is not an embedded chat model
        or its files cannot be read (the caller then estimates)."""
        config = self._models.get(model)
        if config is None:
            return None
        with self._lock:
            if model not in self._loaded:
                self._loaded[model] = _load(config)
            return self._loaded[model]


def _load(config: ChatModelConfig) -> Encode | None:
    try:
        import llama_cpp

        vocab = llama_cpp.Llama(
            model_path=str(resolve_model_path(config.path)), vocab_only=True, verbose=False
        )
    except Exception:  # the package or the model file is missing: estimate instead
        return None

    def encode(text: str) -> list[int]:
        ids: list[int] = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return ids

    return encode
