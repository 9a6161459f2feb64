"""batchd's embedded local models: answer batch lines on this machine, offline.

``LocalBackend(LocalModelsConfig())`` serves, from models shipped in PyPI packages:

* ``smollm2-135m-instruct`` on ``/v1/chat/completions`` and ``/v1/completions``
  (llama.cpp, continuous batching with shared prompt prefixes);
* ``all-minilm-l6-v2`` on ``/v1/embeddings`` (onnxruntime, int8);
* ``omni-moderation-latest`` and ``text-moderation-latest`` on ``/v1/moderations``
  (profanity_check).

See docs/local-models.md.
"""

from batchd.backends.local.backend import LocalBackend
from batchd.backends.local.config import (
    ChatModelConfig,
    EmbeddingModelConfig,
    LocalModelsConfig,
    ModerationModelConfig,
)

__all__ = [
    "ChatModelConfig",
    "EmbeddingModelConfig",
    "LocalBackend",
    "LocalModelsConfig",
    "ModerationModelConfig",
]
