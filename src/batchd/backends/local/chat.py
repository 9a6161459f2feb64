"""Continuous batched decoding of many completions at once with llama.cpp.

One :class:`ChatEngine` per chat model runs a dedicated worker thread that owns the
model. Requests arrive from the event loop as :class:`GenerationJob` objects; each
is tokenized on that thread and becomes ``n`` sequences, which the
:class:`~batchd.backends.local.scheduler.Scheduler` decodes together (one
``llama_decode`` per step for all of them, chunked prefill, continuous refill of
free slots), sharing a common prompt prefix through the KV cache
(:mod:`batchd.backends.local.prefix`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from typing import Any

from batchd.backends.local.config import ChatModelConfig, resolve_model_path
from batchd.backends.local.errors import RequestError
from batchd.backends.local.generation import (
    ChoiceOutput,
    EngineStats,
    GenerationJob,
    GenerationOutput,
)
from batchd.backends.local.llamacpp import LlamaRuntime
from batchd.backends.local.prompts import PromptBuilder
from batchd.backends.local.sampling import SeqSampler, choice_seed, free_sampler, make_sampler
from batchd.backends.local.scheduler import Scheduler
from batchd.backends.local.sequences import Pending, Seq
from batchd.backends.local.threads import STOP, LazyModel, WorkerThread, deliver

__all__ = ["ChatEngine", "ChoiceOutput", "EngineStats", "GenerationJob", "GenerationOutput"]

log = logging.getLogger(__name__)


class _Loaded:
    """What the worker thread loads on first use: the model and its prompt builder."""

    def __init__(self, name: str, config: ChatModelConfig) -> None:
        self.rt = LlamaRuntime(resolve_model_path(config.path), config)
        self.prompts = PromptBuilder(self.rt, name)
        log.info(
            "chat model %s: n_ctx=%d, max_batch=%d, threads=%d",
            name,
            self.rt.n_ctx,
            config.max_batch,
            config.n_threads,
        )


class ChatEngine:
    """The continuous-batching decoder of one GGUF model."""

    def __init__(self, name: str, config: ChatModelConfig, *, window_s: float = 0.002) -> None:
        self.name = name
        self.config = config
        self._stats = EngineStats()
        self._window_s = window_s
        self._thread = WorkerThread(f"batchd-local-chat-{name}", self._main)
        # Worker-thread state (touched by the worker thread only).
        self._model = LazyModel(f"chat model {name}", lambda: _Loaded(name, config))
        self._scheduler: Scheduler | None = None

    @property
    def stats(self) -> EngineStats:
        """The engine's counters (assign a fresh :class:`EngineStats` to reset them)."""
        return self._stats

    @stats.setter
    def stats(self, stats: EngineStats) -> None:
        self._stats = stats
        if self._scheduler is not None:
            self._scheduler.stats = stats

    @property
    def _rt(self) -> LlamaRuntime | None:
        """The loaded runtime, if any (for tests that inspect the model)."""
        loaded = self._model.model
        return loaded.rt if loaded is not None else None

    @property
    def _active(self) -> list[Seq]:
        """The sequences holding a slot (for tests that wait for the engine to idle)."""
        return self._scheduler.active if self._scheduler is not None else []

    def load(self) -> tuple[int, int]:
        """``(running, waiting)`` sequences: what the engine decodes now and what waits
        for a slot (jobs not yet taken from the inbox count as waiting). Read from
        any thread: the numbers are a moment's snapshot, for a concurrency controller."""
        sched = self._scheduler
        running = len(sched.active) if sched is not None else 0
        waiting = len(sched.waiting) if sched is not None else 0
        return running, waiting + self._thread.inbox.qsize()

    # -- event-loop side ---------------------------------------------------------

    async def generate(self, job: GenerationJob) -> GenerationOutput:
        """Queue ``job`` and wait for all its choices."""
        if self._thread.closed:
            raise RuntimeError(f"chat engine {self.name} is closed")
        future: asyncio.Future[GenerationOutput] = asyncio.get_running_loop().create_future()
        pending = Pending(job, future)

        def _on_done(f: asyncio.Future[GenerationOutput]) -> None:
            if f.cancelled():
                pending.cancelled = True  # the worker drops its sequences at the next step

        future.add_done_callback(_on_done)
        self._thread.put(pending)
        return await future

    def close(self) -> None:
        """Stop the worker and free the model (blocking: call it off the event loop)."""
        self._thread.close()

    # -- worker thread --------------------------------------------------------------

    def _main(self) -> None:
        while True:
            sched = self._scheduler
            try:
                if not self._intake(block=sched is None or not sched.busy):
                    break
                sched = self._scheduler
                if sched is not None:
                    sched.admit()
                    if sched.active:
                        sched.step()
            except Exception as exc:  # a bug or a llama.cpp failure: fail those in hand, go on
                log.exception("chat engine %s failed a step", self.name)
                if sched is not None:
                    sched.fail_all(exc)
        if self._scheduler is not None:
            self._scheduler.fail_all(RuntimeError(f"chat engine {self.name} closed"))
            self._scheduler = None
        loaded = self._model.drop()
        if loaded is not None:
            loaded.rt.close()

    def _intake(self, *, block: bool) -> bool:
        """Move submitted jobs into the waiting line; False when asked to stop."""
        inbox = self._thread.inbox
        items: list[Any] = []
        if block:
            items.append(inbox.get())
            # Concurrent submissions arrive a few microseconds apart: linger briefly
            # so they are admitted (and share their prefix) together.
            deadline = time.monotonic() + self._window_s
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    items.append(inbox.get(timeout=remaining))
                except queue.Empty:
                    break
        while True:
            try:
                items.append(inbox.get_nowait())
            except queue.Empty:
                break
        for item in items:
            if item is STOP:
                return False
            self._prepare(item)
        return True

    def _prepare(self, pending: Pending) -> None:
        """Tokenize a job, check it fits, and queue its sequences (or fail it)."""
        if pending.cancelled:
            return
        job = pending.job
        samplers: list[SeqSampler | None] = []
        try:
            loaded = self._model.get()
            rt = loaded.rt
            if self._scheduler is None:
                self._scheduler = Scheduler(rt, self.config, self._stats)
            if job.messages is not None:
                tokens = loaded.prompts.chat(job.messages)
            else:
                assert job.prompt is not None
                tokens = loaded.prompts.completion(job.prompt)
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
            self._scheduler.waiting.append(Seq(pending, i, max_tokens, sampler))
