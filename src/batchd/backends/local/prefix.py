"""The shared prompt prefix: prefilled once, given to every sequence that starts with it.

A reserved sequence (the last slot of the context) holds one common prefix,
typically the system prompt and the chat template's opening of a labelling job.
Each newly admitted sequence whose prompt starts with it gets those KV cells by
``llama_memory_seq_cp`` (shared by reference in the unified cache, not copied) and
only prefills the rest of its prompt.
"""

from __future__ import annotations

import logging

from batchd.backends.local.generation import EngineStats
from batchd.backends.local.llamacpp import LlamaRuntime
from batchd.backends.local.sequences import Seq, common_prefix

log = logging.getLogger(__name__)


class SharedPrefix:
    """The prefix held by sequence ``seq_id`` of ``rt``'s cache."""

    def __init__(self, rt: LlamaRuntime, seq_id: int, min_tokens: int, stats: EngineStats) -> None:
        self._rt = rt
        self.seq_id = seq_id
        self._min_tokens = min_tokens
        self.stats = stats
        self.tokens: list[int] = []
        self._last_prompt: list[int] = []

    def __len__(self) -> int:
        return len(self.tokens)

    def share(self, admitted: list[Seq]) -> None:
        """Point the admitted sequences at the prefix, renewing it first if worthwhile."""
        # A sequence must prefill at least its last prompt token (to get logits).
        caps = [len(s.tokens) - 1 for s in admitted]
        from_cache = [
            min(common_prefix(s.tokens, self.tokens), cap)
            for s, cap in zip(admitted, caps, strict=True)
        ]
        # Candidate: what the new prompts have in common, or, for a lone newcomer,
        # what it has in common with the previous prompt. (The previous prompt must not
        # cut a group of newcomers: it may belong to an earlier job.)
        group = admitted[0].tokens[: min(caps)]
        others = [s.tokens for s in admitted[1:]] or [self._last_prompt]
        for other in others:
            if other:
                group = group[: common_prefix(group, other)]
        self._last_prompt = admitted[-1].tokens
        # Renewing keeps what the old prefix has in common with the group and prefills
        # the rest, tokens the admitted sequences would otherwise prefill themselves:
        # it costs nothing now, and later prompts that start the same way share it. So
        # renew whenever the group is longer than what the prefix gives them already
        # (a prefix left by an earlier job must not outlive it: one sequence admitted
        # at a time, as a service sends them, could otherwise never replace it).
        if len(group) >= self._min_tokens and len(group) > max(from_cache):
            self._extend(group)
        for seq, cap in zip(admitted, caps, strict=True):
            n = min(common_prefix(seq.tokens, self.tokens), cap)
            if n >= self._min_tokens:
                self._rt.seq_cp(self.seq_id, seq.seq_id, n)
                seq.n_past = n
                self.stats.shared_tokens += n

    def _extend(self, tokens: list[int]) -> None:
        """Make the prefix ``tokens``: keep the cells it shares with the old one,
        prefill the rest (no logits needed)."""
        rt = self._rt
        keep = common_prefix(tokens, self.tokens)
        if keep < len(self.tokens):
            rt.seq_rm(self.seq_id, keep)
            self.tokens = self.tokens[:keep]
        for start in range(keep, len(tokens), rt.n_batch):
            chunk = tokens[start : start + rt.n_batch]
            entries = [(t, start + i, self.seq_id, False) for i, t in enumerate(chunk)]
            if rt.decode(entries) != 0:
                log.debug("no room for a shared prefix of %d tokens", len(tokens))
                rt.seq_rm(self.seq_id)
                self.tokens = []
                return
            self.stats.decode_calls += 1
            self.stats.prefill_tokens += len(chunk)
            self.tokens = tokens[: start + len(chunk)]

    def drop(self) -> None:
        """Free the prefix's cells (sequences that share them keep their own references)."""
        if self.tokens:
            self._rt.seq_rm(self.seq_id)
            self.tokens = []

    def forget(self) -> None:
        """After the whole cache was cleared: nothing is held any more."""
        self.tokens = []
