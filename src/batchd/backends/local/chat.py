"""Continuous batched decoding of many completions at once with llama.cpp.

One :class:`ChatEngine` per chat model runs a dedicated worker thread that owns the
model. Requests arrive from the event loop as :class:`GenerationJob` objects; each
becomes ``n`` sequences, and every step of the worker's loop makes **one**
``llama_decode`` call that carries

* the next token of every sequence that is generating, and
* as many prompt tokens of newly admitted sequences as fit in ``n_batch``
  (chunked prefill),

then samples one token per sequence with that sequence's own sampler chain.
Sequences finish independently and their slots are refilled from the queue at the
next step (continuous batching), so a long completion never holds up the others.

Prompt prefixes are shared through the KV cache: a reserved sequence (the last
slot) holds a common prefix, prefilled once (typically the system prompt and the
chat template's opening of a labelling job), and each new sequence whose prompt
starts with it gets those cells by ``llama_memory_seq_cp`` and only prefills the
rest of its prompt.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from batchd.backends.local.config import ChatModelConfig, resolve_model_path
from batchd.backends.local.errors import RequestError
from batchd.backends.local.llamacpp import LlamaRuntime
from batchd.backends.local.params import SamplingParams
from batchd.backends.local.prompts import PromptBuilder
from batchd.backends.local.sampling import SeqSampler, choice_seed, free_sampler, make_sampler
from batchd.backends.local.worker import deliver

log = logging.getLogger(__name__)

_STOP = object()


@dataclass(frozen=True, slots=True)
class GenerationJob:
    """One request: a chat (``messages``) or a raw ``prompt``, sampled ``n`` times."""

    params: SamplingParams
    messages: list[dict[str, Any]] | None = None
    prompt: str | list[int] | None = None
    n: int = 1


@dataclass(frozen=True, slots=True)
class ChoiceOutput:
    """One generated completion."""

    text: str
    finish_reason: str
    """``stop`` (end of generation or a stop sequence) or ``length``."""
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class GenerationOutput:
    """The answer to a :class:`GenerationJob`."""

    prompt_tokens: int
    choices: list[ChoiceOutput]


@dataclass(slots=True)
class EngineStats:
    """Counters, for logs and benchmarks."""

    decode_calls: int = 0
    prefill_tokens: int = 0
    """Prompt tokens actually run through the model (shared prefixes count once)."""
    shared_tokens: int = 0
    """Prompt tokens a sequence got from the shared prefix instead of prefilling them."""
    generated_tokens: int = 0
    max_active: int = 0
    preemptions: int = 0


@dataclass(eq=False, slots=True)
class _Pending:
    """A job inside the engine: collects its choices until all are done."""

    job: GenerationJob
    future: asyncio.Future[GenerationOutput]
    tokens: list[int] = field(default_factory=list)
    choices: list[ChoiceOutput | None] = field(default_factory=list)
    remaining: int = 0
    cancelled: bool = False
    failed: bool = False


@dataclass(eq=False, slots=True)
class _Seq:
    """One sequence being (or waiting to be) decoded."""

    pending: _Pending
    index: int
    max_tokens: int
    sampler: SeqSampler | None
    seq_id: int = -1
    n_past: int = 0
    """Positions already in the KV cache (shared prefix included)."""
    next_token: int | None = None
    """The sampled token still to be fed to the model."""
    generated: int = 0
    text: bytearray = field(default_factory=bytearray)
    stop_scan: int = 0

    @property
    def tokens(self) -> list[int]:
        return self.pending.tokens

    @property
    def reserve(self) -> int:
        """KV cells this sequence may need at most (its whole prompt and completion)."""
        return len(self.tokens) + self.max_tokens


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class ChatEngine:
    """The continuous-batching decoder of one GGUF model."""

    def __init__(self, name: str, config: ChatModelConfig, *, window_s: float = 0.002) -> None:
        self.name = name
        self.config = config
        self.stats = EngineStats()
        self._window_s = window_s
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        # Worker-thread state (touched by the worker thread only).
        self._rt: LlamaRuntime | None = None
        self._prompts: PromptBuilder | None = None
        self._load_error: BaseException | None = None
        self._waiting: deque[_Seq] = deque()
        self._active: list[_Seq] = []
        self._free_slots: list[int] = list(range(config.max_batch - 1, -1, -1))
        self._reserved = 0
        self._prefix: list[int] = []
        self._prefix_seq = config.max_batch
        self._last_prompt: list[int] = []
        self._admission_paused = False
        """Set when a sequence had to be put back for lack of KV room: admit no more
        until one finishes (or none is left), so the same one is not readmitted at once."""

    # -- event-loop side ---------------------------------------------------------

    async def generate(self, job: GenerationJob) -> GenerationOutput:
        """Queue ``job`` and wait for all its choices."""
        if self._closed:
            raise RuntimeError(f"chat engine {self.name} is closed")
        self._ensure_thread()
        future: asyncio.Future[GenerationOutput] = asyncio.get_running_loop().create_future()
        pending = _Pending(job, future)

        def _on_done(f: asyncio.Future[GenerationOutput]) -> None:
            if f.cancelled():
                pending.cancelled = True  # the worker drops its sequences at the next step

        future.add_done_callback(_on_done)
        self._inbox.put(pending)
        return await future

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name=f"batchd-local-chat-{self.name}", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        """Stop the worker and free the model (blocking: call it off the event loop)."""
        self._closed = True
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._inbox.put(_STOP)
            thread.join()

    # -- worker thread --------------------------------------------------------------

    def _main(self) -> None:
        while True:
            try:
                idle = not self._active and not self._waiting
                if not self._intake(block=idle):
                    break
                self._admit()
                if self._active:
                    self._step()
            except Exception as exc:  # a bug or a llama.cpp failure: fail those in hand, go on
                log.exception("chat engine %s failed a step", self.name)
                self._fail_all(exc)
        self._fail_all(RuntimeError(f"chat engine {self.name} closed"))
        self._release()

    def _intake(self, *, block: bool) -> bool:
        """Move submitted jobs into the waiting line; False when asked to stop."""
        items: list[Any] = []
        if block:
            items.append(self._inbox.get())
            # Concurrent submissions arrive a few microseconds apart: linger briefly
            # so they are admitted (and share their prefix) together.
            deadline = time.monotonic() + self._window_s
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    items.append(self._inbox.get(timeout=remaining))
                except queue.Empty:
                    break
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for item in items:
            if item is _STOP:
                return False
            self._prepare(item)
        return True

    def _runtime(self) -> tuple[LlamaRuntime, PromptBuilder]:
        if self._rt is None or self._prompts is None:
            if self._load_error is not None:
                raise self._load_error
            started = time.monotonic()
            try:
                self._rt = LlamaRuntime(resolve_model_path(self.config.path), self.config)
                self._prompts = PromptBuilder(self._rt, self.name)
            except Exception as exc:
                self._load_error = exc
                raise
            log.info(
                "chat model %s loaded in %.2fs (n_ctx=%d, max_batch=%d, threads=%d)",
                self.name,
                time.monotonic() - started,
                self._rt.n_ctx,
                self.config.max_batch,
                self.config.n_threads,
            )
        return self._rt, self._prompts

    def _prepare(self, pending: _Pending) -> None:
        """Tokenize a job, check it fits, and queue its sequences (or fail it)."""
        if pending.cancelled:
            return
        job = pending.job
        samplers: list[SeqSampler | None] = []
        try:
            rt, prompts = self._runtime()
            if job.messages is not None:
                tokens = prompts.chat(job.messages)
            else:
                assert job.prompt is not None
                tokens = prompts.completion(job.prompt)
            limit = min(rt.n_ctx, rt.n_ctx_train)
            max_tokens = job.params.max_tokens
            if max_tokens is None:
                max_tokens = max(1, min(self.config.default_max_tokens, limit - len(tokens)))
            if len(tokens) + max_tokens > limit:
                raise RequestError(
                    f"This model's maximum context length is {limit} tokens. However, you "
                    f"requested {len(tokens) + max_tokens} tokens ({len(tokens)} in the "
                    f"prompt, {max_tokens} in the completion). Please reduce the length of "
                    "the prompt or completion.",
                    param="messages" if job.messages is not None else "prompt",
                    code="context_length_exceeded",
                )
            for i in range(job.n):
                samplers.append(make_sampler(rt, job.params, choice_seed(job.params.seed, i)))
        except Exception as exc:
            for s in samplers:
                free_sampler(s)
            deliver(pending.future, error=exc)
            return
        pending.tokens = tokens
        pending.choices = [None] * job.n
        pending.remaining = job.n
        for i, sampler in enumerate(samplers):
            self._waiting.append(_Seq(pending, i, max_tokens, sampler))

    def _admit(self) -> None:
        """Give free slots to waiting sequences while the KV cache has room for them."""
        rt = self._rt
        if rt is None:
            return
        if self._admission_paused and self._active:
            return
        self._admission_paused = False
        admitted: list[_Seq] = []
        while self._waiting and self._free_slots:
            seq = self._waiting[0]
            if seq.pending.cancelled or seq.pending.failed:
                self._waiting.popleft()
                free_sampler(seq.sampler)
                continue
            if self._reserved + seq.reserve + len(self._prefix) > rt.n_ctx:
                if self._prefix and not self._active and not admitted:
                    self._drop_prefix()  # the prefix is all that is in the way
                    continue
                break
            self._waiting.popleft()
            seq.seq_id = self._free_slots.pop()
            self._reserved += seq.reserve
            admitted.append(seq)
        if admitted:
            self._share_prefix(admitted)
            self._active.extend(admitted)
            self.stats.max_active = max(self.stats.max_active, len(self._active))

    def _share_prefix(self, admitted: list[_Seq]) -> None:
        """Point the admitted sequences at the shared prefix, renewing it if worthwhile."""
        rt = self._rt
        assert rt is not None
        # A sequence must prefill at least its last prompt token (to get logits).
        caps = [len(s.tokens) - 1 for s in admitted]
        from_cache = [
            min(_common_prefix(s.tokens, self._prefix), cap)
            for s, cap in zip(admitted, caps, strict=True)
        ]
        # Candidate: what the new prompts (and the previous one) have in common.
        group = admitted[0].tokens[: min(caps)]
        for other in [*(s.tokens for s in admitted[1:]), self._last_prompt]:
            if other:
                group = group[: _common_prefix(group, other)]
        self._last_prompt = admitted[-1].tokens
        # Renewing costs one prefill of the group; it pays when the admitted sequences
        # save at least that much over what the current prefix gives them (a tie is
        # free: those tokens would have been prefilled anyway, and later prompts that
        # start the same way will share them).
        saved = sum(max(0, len(group) - n) for n in from_cache)
        if len(group) >= self.config.min_shared_prefix and saved >= len(group):
            self._set_prefix(group)
        for seq, cap in zip(admitted, caps, strict=True):
            n = min(_common_prefix(seq.tokens, self._prefix), cap)
            if n >= self.config.min_shared_prefix:
                rt.seq_cp(self._prefix_seq, seq.seq_id, n)
                seq.n_past = n
                self.stats.shared_tokens += n

    def _set_prefix(self, tokens: list[int]) -> None:
        """Prefill ``tokens`` into the prefix sequence (no logits needed)."""
        rt = self._rt
        assert rt is not None
        self._drop_prefix()
        for start in range(0, len(tokens), rt.n_batch):
            chunk = tokens[start : start + rt.n_batch]
            entries = [(t, start + i, self._prefix_seq, False) for i, t in enumerate(chunk)]
            if rt.decode(entries) != 0:
                log.debug("no room for a shared prefix of %d tokens", len(tokens))
                rt.seq_rm(self._prefix_seq)
                return
            self.stats.decode_calls += 1
            self.stats.prefill_tokens += len(chunk)
        self._prefix = list(tokens)

    def _drop_prefix(self) -> None:
        if self._prefix:
            assert self._rt is not None
            self._rt.seq_rm(self._prefix_seq)
            self._prefix = []

    def _step(self) -> None:
        """One llama_decode over every active sequence, then one token each."""
        rt = self._rt
        assert rt is not None
        for seq in [s for s in self._active if s.pending.cancelled or s.pending.failed]:
            self._retire(seq)
        if not self._active:
            return
        entries: list[tuple[int, int, int, bool]] = []
        outputs: list[tuple[_Seq, int]] = []  # (sequence, its batch index)
        prefill_to: list[tuple[_Seq, int]] = []
        for seq in self._active:
            if seq.next_token is not None:
                outputs.append((seq, len(entries)))
                entries.append((seq.next_token, seq.n_past, seq.seq_id, True))
        room = rt.n_batch - len(entries)
        for seq in self._active:
            if room <= 0:
                break
            if seq.next_token is None and seq.n_past < len(seq.tokens):
                end = min(len(seq.tokens), seq.n_past + room)
                for pos in range(seq.n_past, end):
                    entries.append((seq.tokens[pos], pos, seq.seq_id, pos == len(seq.tokens) - 1))
                if end == len(seq.tokens):
                    outputs.append((seq, len(entries) - 1))
                prefill_to.append((seq, end))
                room -= end - seq.n_past
        if not entries:
            return
        status = rt.decode(entries)
        if status == 1:  # no room in the KV cache: put the newest sequence back in line
            self._preempt()
            return
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
        self.stats.decode_calls += 1
        for seq, _ in outputs:
            if seq.next_token is not None:
                seq.n_past += 1
        for seq, end in prefill_to:
            self.stats.prefill_tokens += end - seq.n_past
            seq.n_past = end
        self._sample(outputs)

    def _sample(self, outputs: list[tuple[_Seq, int]]) -> None:
        rt = self._rt
        assert rt is not None
        # Argmax (one numpy call for the whole batch) for greedy sequences, including
        # greedy ones under a grammar, which check that token against the grammar.
        argmax_rows = [
            row
            for row, (seq, _) in enumerate(outputs)
            if seq.sampler is None or seq.sampler.grammar is not None
        ]
        argmax: dict[int, int] = {}
        if argmax_rows:
            logits = rt.logits(len(outputs))
            picks = np.argmax(logits[argmax_rows], axis=1)
            argmax = dict(zip(argmax_rows, picks.tolist(), strict=True))
        for row, (seq, batch_index) in enumerate(outputs):
            sampler = seq.sampler
            if sampler is None:
                token = argmax[row]
            elif row in argmax and sampler.grammar_allows(argmax[row]):
                token = argmax[row]
                sampler.accept(token)
            else:
                token = rt.sample(sampler.chain, batch_index)
            self._accept(seq, token)

    def _accept(self, seq: _Seq, token: int) -> None:
        """Take a sampled token: finish the sequence or queue the token for the next step."""
        rt = self._rt
        assert rt is not None
        if rt.is_eog(token):
            self._finish(seq, "stop", seq.text.decode("utf-8", errors="ignore"))
            return
        seq.generated += 1
        self.stats.generated_tokens += 1
        seq.text += rt.piece(token)
        stops = seq.pending.job.params.stop
        if stops:
            text = seq.text.decode("utf-8", errors="ignore")
            hits = [i for s in stops if (i := text.find(s, seq.stop_scan)) >= 0]
            if hits:
                self._finish(seq, "stop", text[: min(hits)])
                return
            seq.stop_scan = max(0, len(text) - max(len(s) for s in stops))
        if seq.generated >= seq.max_tokens:
            self._finish(seq, "length", seq.text.decode("utf-8", errors="ignore"))
            return
        seq.next_token = token

    def _finish(self, seq: _Seq, reason: str, text: str) -> None:
        pending = seq.pending
        pending.choices[seq.index] = ChoiceOutput(text, reason, seq.generated)
        pending.remaining -= 1
        self._retire(seq)
        if pending.remaining == 0:
            choices = [c for c in pending.choices if c is not None]
            deliver(pending.future, GenerationOutput(len(pending.tokens), choices))

    def _retire(self, seq: _Seq) -> None:
        """Free a sequence's slot, cache cells and sampler."""
        assert self._rt is not None
        self._active.remove(seq)
        self._rt.seq_rm(seq.seq_id)
        self._free_slots.append(seq.seq_id)
        self._reserved -= seq.reserve
        self._admission_paused = False
        free_sampler(seq.sampler)
        seq.sampler = None

    def _preempt(self) -> None:
        """Make room in the KV cache: drop the prefix, else requeue the newest sequence."""
        assert self._rt is not None
        self.stats.preemptions += 1
        if self._prefix:
            self._drop_prefix()
            return
        victim = self._active[-1]
        if len(self._active) == 1:
            self._fail(victim.pending, RuntimeError("the KV cache is too small for this request"))
            return
        self._active.remove(victim)
        self._rt.seq_rm(victim.seq_id)
        self._free_slots.append(victim.seq_id)
        self._reserved -= victim.reserve
        if victim.sampler is not None:
            victim.sampler.reset()
        victim.seq_id, victim.n_past, victim.next_token = -1, 0, None
        victim.generated, victim.text, victim.stop_scan = 0, bytearray(), 0
        self._waiting.appendleft(victim)
        self._admission_paused = True

    def _fail(self, pending: _Pending, error: BaseException) -> None:
        pending.failed = True
        for seq in [s for s in self._active if s.pending is pending]:
            self._retire(seq)
        deliver(pending.future, error=error)

    def _fail_all(self, error: BaseException) -> None:
        pendings = {id(s.pending): s.pending for s in [*self._active, *self._waiting]}
        for seq in list(self._active):
            try:
                self._retire(seq)
            except Exception:  # the runtime may be the thing that broke
                free_sampler(seq.sampler)
        for seq in self._waiting:
            free_sampler(seq.sampler)
        self._active.clear()
        self._waiting.clear()
        self._free_slots = list(range(self.config.max_batch - 1, -1, -1))
        self._reserved = 0
        self._prefix = []
        if self._rt is not None:
            self._rt.clear()
        for pending in pendings.values():
            if not pending.failed:
                pending.failed = True
                deliver(pending.future, error=error)

    def _release(self) -> None:
        if self._rt is not None:
            self._rt.close()
            self._rt = None
            self._prompts = None
