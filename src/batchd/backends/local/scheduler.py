"""Continuous batching over one llama.cpp context: slots, steps, sampling, finishing.

Every :meth:`Scheduler.step` makes **one** ``llama_decode`` call that carries

* the next token of every sequence that is generating, and
* as many prompt tokens of newly admitted sequences as fit in ``n_batch``
  (chunked prefill),

then samples one token per sequence with that sequence's own sampler chain.
Sequences finish independently and their slots are refilled from the waiting line
at the next step, so a long completion never holds up the others. It runs on the
chat engine's worker thread only.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np

from batchd.backends.local.config import ChatModelConfig
from batchd.backends.local.generation import ChoiceOutput, EngineStats, GenerationOutput
from batchd.backends.local.llamacpp import LlamaRuntime
from batchd.backends.local.prefix import SharedPrefix
from batchd.backends.local.sampling import free_sampler
from batchd.backends.local.sequences import Pending, Seq
from batchd.backends.local.threads import deliver

log = logging.getLogger(__name__)


class Scheduler:
    """The sequences waiting for and holding the ``max_batch`` slots of one context."""

    def __init__(self, rt: LlamaRuntime, config: ChatModelConfig, stats: EngineStats) -> None:
        self._rt = rt
        self._max_batch = config.max_batch
        self._stats = stats
        self.waiting: deque[Seq] = deque()
        self.active: list[Seq] = []
        self._free_slots: list[int] = list(range(config.max_batch - 1, -1, -1))
        self._reserved = 0
        # The last slot (``max_batch``) holds the shared prefix.
        self.prefix = SharedPrefix(rt, config.max_batch, config.min_shared_prefix, stats)
        self._admission_paused = False
        """Set when a sequence had to be put back for lack of KV room: admit no more
        until one finishes (or none is left), so the same one is not readmitted at once."""

    @property
    def stats(self) -> EngineStats:
        return self._stats

    @stats.setter
    def stats(self, stats: EngineStats) -> None:
        self._stats = self.prefix.stats = stats

    @property
    def busy(self) -> bool:
        return bool(self.active or self.waiting)

    def admit(self) -> None:
        """Give free slots to waiting sequences while the KV cache has room for them."""
        if self._admission_paused and self.active:
            return
        self._admission_paused = False
        admitted: list[Seq] = []
        while self.waiting and self._free_slots:
            seq = self.waiting[0]
            if seq.pending.dropped:
                self.waiting.popleft()
                free_sampler(seq.sampler)
                continue
            if self._reserved + seq.reserve + len(self.prefix) > self._rt.n_ctx:
                if self.prefix.tokens and not self.active and not admitted:
                    self.prefix.drop()  # the prefix is all that is in the way
                    continue
                break
            self.waiting.popleft()
            seq.seq_id = self._free_slots.pop()
            self._reserved += seq.reserve
            admitted.append(seq)
        if admitted:
            self.prefix.share(admitted)
            self.active.extend(admitted)
            self._stats.max_active = max(self._stats.max_active, len(self.active))

    def step(self) -> None:
        """One llama_decode over every active sequence, then one token each."""
        rt = self._rt
        for seq in [s for s in self.active if s.pending.dropped]:
            self._retire(seq)
        if not self.active:
            return
        entries: list[tuple[int, int, int, bool]] = []
        outputs: list[tuple[Seq, int]] = []  # (sequence, its batch index)
        prefill_to: list[tuple[Seq, int]] = []
        for seq in self.active:
            if seq.next_token is not None:
                outputs.append((seq, len(entries)))
                entries.append((seq.next_token, seq.n_past, seq.seq_id, True))
        room = rt.n_batch - len(entries)
        for seq in self.active:
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
        self._stats.decode_calls += 1
        for seq, _ in outputs:
            if seq.next_token is not None:
                seq.n_past += 1
        for seq, end in prefill_to:
            self._stats.prefill_tokens += end - seq.n_past
            seq.n_past = end
        self._sample(outputs)

    def _sample(self, outputs: list[tuple[Seq, int]]) -> None:
        rt = self._rt
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

    def _accept(self, seq: Seq, token: int) -> None:
        """Take a sampled token: finish the sequence or queue the token for the next step."""
        rt = self._rt
        if rt.is_eog(token):
            self._finish(seq, "stop", seq.text.decode("utf-8", errors="ignore"))
            return
        seq.generated += 1
        self._stats.generated_tokens += 1
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

    def _finish(self, seq: Seq, reason: str, text: str) -> None:
        pending = seq.pending
        pending.choices[seq.index] = ChoiceOutput(text, reason, seq.generated)
        pending.remaining -= 1
        self._retire(seq)
        if pending.remaining == 0:
            choices = [c for c in pending.choices if c is not None]
            deliver(pending.future, GenerationOutput(len(pending.tokens), choices))

    def _retire(self, seq: Seq) -> None:
        """Free a sequence's slot, cache cells and sampler."""
        self.active.remove(seq)
        self._rt.seq_rm(seq.seq_id)
        self._free_slots.append(seq.seq_id)
        self._reserved -= seq.reserve
        self._admission_paused = False
        free_sampler(seq.sampler)
        seq.sampler = None

    def _preempt(self) -> None:
        """Make room in the KV cache: drop the prefix, else requeue the newest sequence."""
        self._stats.preemptions += 1
        if self.prefix.tokens:
            self.prefix.drop()
            return
        victim = self.active[-1]
        if len(self.active) == 1:
            self._fail(victim.pending, RuntimeError("the KV cache is too small for this request"))
            return
        self.active.remove(victim)
        self._rt.seq_rm(victim.seq_id)
        self._free_slots.append(victim.seq_id)
        self._reserved -= victim.reserve
        victim.restart()
        self.waiting.appendleft(victim)
        self._admission_paused = True

    def _fail(self, pending: Pending, error: BaseException) -> None:
        pending.failed = True
        for seq in [s for s in self.active if s.pending is pending]:
            self._retire(seq)
        deliver(pending.future, error=error)

    def fail_all(self, error: BaseException) -> None:
        """Fail every job in hand and start over with an empty cache."""
        pendings = {id(s.pending): s.pending for s in [*self.active, *self.waiting]}
        for seq in list(self.active):
            try:
                self._retire(seq)
            except Exception:  # the runtime may be the thing that broke
                free_sampler(seq.sampler)
        for seq in self.waiting:
            free_sampler(seq.sampler)
        self.active.clear()
        self.waiting.clear()
        self._free_slots = list(range(self._max_batch - 1, -1, -1))
        self._reserved = 0
        self.prefix.forget()
        self._rt.clear()
        for pending in pendings.values():
            if not pending.failed:
                pending.failed = True
                deliver(pending.future, error=error)
