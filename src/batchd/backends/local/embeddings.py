"""Sentence embeddings with onnxruntime: all-MiniLM-L6-v2 (int8) by default.

Texts from concurrent requests are gathered by a :class:`BatchWorker`, sorted by
length and run in sub-batches padded to their longest member (sorting keeps the
padding, i.e. wasted compute, small). The pooled vector is the mean of the token
states over the attention mask, L2-normalised, as sentence-transformers computes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from batchd.backends.local.config import EmbeddingModelConfig, resolve_model_path

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Embedded:
    """One text's embedding and how many tokens of it the model read."""

    vector: Vector
    tokens: int
    """Tokens counted for usage: the text's own tokens after truncation (no [CLS]/[SEP])."""


class EmbeddingModel:
    """An ONNX sentence-embedding model and its tokenizer (load in the worker thread)."""

    def __init__(self, config: EmbeddingModelConfig) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.config = config
        options = ort.SessionOptions()
        # One inference at a time runs in the worker thread, so all threads go to
        # the operators (intra-op); inter-op parallelism would only oversubscribe.
        options.intra_op_num_threads = config.n_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(resolve_model_path(config.onnx_path)),
            options,
            providers=["CPUExecutionProvider"],
        )
        self._input_names = {i.name for i in self.session.get_inputs()}
        tokenizer = Tokenizer.from_file(str(resolve_model_path(config.tokenizer_path)))
        tokenizer.no_padding()  # padding is done per sub-batch, to its longest member
        tokenizer.enable_truncation(max_length=config.max_tokens)
        self.tokenizer = tokenizer
        width = self.session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != config.dimensions:
            raise ValueError(f"model outputs {width} dimensions, config says {config.dimensions}")

    def embed(self, texts: Sequence[str]) -> list[Embedded]:
        """Embeddings of ``texts``, in order."""
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out: list[Embedded | None] = [None] * len(texts)
        step = self.config.max_batch
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            vectors = self._run([encodings[i] for i in chunk])
            for row, i in enumerate(chunk):
                enc = encodings[i]
                own = len(enc.ids) - sum(enc.special_tokens_mask)
                out[i] = Embedded(vectors[row], own)
        return [e for e in out if e is not None]

    def _run(self, encodings: list[Any]) -> npt.NDArray[np.float32]:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = enc.attention_mask
            types[row, :n] = enc.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = types
        hidden = self.session.run(None, feeds)[0]  # (batch, tokens, dims)
        return pool(hidden, mask)


def pool(hidden: npt.NDArray[Any], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """Mean over the unmasked tokens, then L2 normalisation (sentence-transformers' way)."""
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden.astype(np.float32) * weights).sum(axis=1)
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    means = summed / counts
    norms = np.clip(np.linalg.norm(means, axis=1, keepdims=True), 1e-12, None)
    result: npt.NDArray[np.float32] = (means / norms).astype(np.float32)
    return result
