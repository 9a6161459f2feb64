"""A thin, typed layer over llama-cpp-python's low-level (ctypes) API.

:class:`LlamaRuntime` owns one model, one context with a single *unified* KV cache
shared by up to ``max_batch + 1`` sequences, and one reusable ``llama_batch``. It
is not thread-safe: the chat engine's worker thread is its only user.

Why the low-level API rather than ``llama_cpp.Llama``: ``Llama`` evaluates one
sequence at a time; batching several sequences into one ``llama_decode`` (and
sharing prompt prefixes between them through the KV cache) is where the
throughput comes from.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt

from batchd.backends.local.config import ChatModelConfig
from batchd.backends.local.cpu import extra_buffer_types

log = logging.getLogger(__name__)

_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    """``llama_backend_init`` once per process, and quiet llama.cpp's stderr chatter."""
    global _backend_ready
    with _backend_lock:
        if _backend_ready:
            return
        # llama-cpp-python prints every llama.cpp log line to stderr unless its
        # logger's level says otherwise (it is NOTSET by default).
        cpp_logger = logging.getLogger("llama-cpp-python")
        if cpp_logger.level == logging.NOTSET:
            cpp_logger.setLevel(logging.ERROR)
        llama_cpp.llama_backend_init()
        _backend_ready = True


class LlamaError(RuntimeError):
    """llama.cpp refused to load a model or to decode."""


class LlamaRuntime:
    """One loaded GGUF model with a multi-sequence context."""

    def __init__(self, path: Path, config: ChatModelConfig) -> None:
        _init_backend()
        mparams = llama_cpp.llama_model_default_params()
        # Extra buffer types (AMX, weight repacking): decided from the CPU's flags
        # unless configured (cpu.py says why AMX machines go without them).
        mparams.use_extra_bufts = extra_buffer_types(config.extra_buffer_types)
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise LlamaError(f"llama.cpp could not load {path}")
        self.model = model
        self.n_seq_max = config.max_batch + 1
        """Slots ``0..max_batch-1`` decode requests; the last one holds the shared prefix."""
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = config.n_ctx
        cparams.n_batch = config.n_batch
        cparams.n_ubatch = config.n_batch
        cparams.n_seq_max = self.n_seq_max
        cparams.n_threads = config.n_threads
        cparams.n_threads_batch = config.n_threads
        cparams.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if config.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        # One cache for all sequences: a prefix copied to another sequence
        # (llama_memory_seq_cp) is then shared by reference, not duplicated.
        cparams.kv_unified = True
        cparams.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise LlamaError(f"llama.cpp could not create a context for {path}")
        self.ctx = ctx
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.n_vocab: int = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_ctx: int = llama_cpp.llama_n_ctx(ctx)
        self.n_ctx_train: int = llama_cpp.llama_model_n_ctx_train(model)
        self.n_batch = config.n_batch
        self.add_bos: bool = llama_cpp.llama_vocab_get_add_bos(self.vocab)
        self._batch = llama_cpp.llama_batch_init(config.n_batch, 0, 1)
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._piece_buf = ctypes.create_string_buffer(256)

    # -- model facts -----------------------------------------------------------

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as a string, or None."""
        size = 1 << 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_model_meta_val_str(self.model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    def chat_template(self) -> str | None:
        """The model's Jinja chat template (``tokenizer.chat_template``), if any."""
        raw = llama_cpp.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8") if raw else None

    def token_text(self, token: int) -> str:
        """A token's vocabulary text (e.g. ``<|im_end|>``), for the chat template."""
        if token < 0:
            return ""
        raw = llama_cpp.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    @property
    def bos(self) -> int:
        return int(llama_cpp.llama_vocab_bos(self.vocab))

    @property
    def eos(self) -> int:
        return int(llama_cpp.llama_vocab_eos(self.vocab))

    def is_eog(self, token: int) -> bool:
        """End of generation (EOS, EOT, ``<|im_end|>``...)."""
        # Cached: this runs once per sequence per step, and every ctypes call drops
        # the GIL, which the server's event loop may then hold for a switch interval.
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))
        return eog

    # -- text <-> tokens ---------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 8
        while True:
            buf = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), buf, size, add_special, parse_special
            )
            if n >= 0:
                return list(buf[:n])
            size = -n

    def piece(self, token: int) -> bytes:
        """The bytes a generated token stands for (special tokens render as nothing)."""
        cached = self._pieces.get(token)
        if cached is None:
            n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, False)
            cached = self._piece_buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    # -- the KV cache ---------------------------------------------------------------

    def seq_rm(self, seq: int, start: int = -1) -> None:
        """Forget what sequence ``seq`` holds (from position ``start`` on, if given)."""
        llama_cpp.llama_memory_seq_rm(self.memory, seq, start, -1)

    def seq_cp(self, src: int, dst: int, n_tokens: int) -> None:
        """Give ``dst`` the first ``n_tokens`` positions of ``src`` (shared, not copied)."""
        llama_cpp.llama_memory_seq_cp(self.memory, src, dst, 0, n_tokens)

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.memory, True)

    # -- decoding ---------------------------------------------------------------------

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> int:
        """Run one ``llama_decode`` over ``(token, pos, seq, wants_logits)`` entries.

        Returns llama.cpp's status: 0 ok, 1 no room in the KV cache, other values errors.
        """
        n = len(entries)
        if not 0 < n <= self.n_batch:
            raise ValueError(f"batch of {n} tokens (limit {self.n_batch})")
        b = self._batch
        token, pos, n_seq_id, seq_id, logits = b.token, b.pos, b.n_seq_id, b.seq_id, b.logits
        for i, (tok, p, seq, want) in enumerate(entries):
            token[i] = tok
            pos[i] = p
            n_seq_id[i] = 1
            seq_id[i][0] = seq
            logits[i] = want
        b.n_tokens = n
        return int(llama_cpp.llama_decode(self.ctx, b))

    def logits(self, n_outputs: int) -> npt.NDArray[np.float32]:
        """The logits of the last decode, one row per entry that wanted them, in order."""
        ptr = llama_cpp.llama_get_logits(self.ctx)
        arr: npt.NDArray[np.float32] = np.ctypeslib.as_array(ptr, shape=(n_outputs, self.n_vocab))
        return arr

    def sample(self, sampler: Any, batch_index: int) -> int:
        """Run a sampler chain on the logits of batch entry ``batch_index`` (and accept)."""
        return int(llama_cpp.llama_sampler_sample(sampler, self.ctx, batch_index))

    def close(self) -> None:
        """Free the batch, the context and the model (idempotent)."""
        if getattr(self, "_batch", None) is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "ctx", None):
            llama_cpp.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            llama_cpp.llama_model_free(self.model)
            self.model = None
