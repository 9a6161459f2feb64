"""Per-sequence sampler chains (llama.cpp ``llama_sampler``), one per decoded sequence.

Each sequence of a batch samples with its own chain, so requests with different
temperatures, seeds or grammars share a decode step. The chain follows OpenAI's
semantics rather than llama.cpp's defaults: no top-k or min-p, just (optionally)
logit bias, frequency/presence penalties, the grammar, top-p, temperature and a
seeded draw; temperature 0 is greedy.

Plain greedy sequences (temperature 0, nothing else) get no chain at all: the
engine takes the argmax of their logits rows with numpy, which is much cheaper than
running a sampler over the whole vocabulary. Greedy sequences under a grammar take
the same shortcut first and ask the grammar about that one token (as llama.cpp's own
common sampler does): if the grammar allows the unconstrained argmax, it is also the
constrained argmax; only when it does not is the grammar run over the whole
vocabulary (about 3-4 ms a token for SmolLM2's 49k-token vocabulary).
"""

from __future__ import annotations

import ctypes
import math
import secrets
from dataclasses import dataclass
from typing import Any

import llama_cpp

from batchd.backends.local.errors import RequestError
from batchd.backends.local.llamacpp import LlamaRuntime
from batchd.backends.local.params import SamplingParams

# OpenAI's penalties count every token generated so far; a window this long covers
# any completion the local models are allowed to produce in practice.
_PENALTY_WINDOW = 4096
# llama.cpp reads this seed value as "pick a random seed".
_RANDOM_SEED = 0xFFFFFFFF


def choice_seed(seed: int | None, choice: int) -> int:
    """The seed of choice ``choice`` (choices of one request must differ)."""
    if seed is None:
        return secrets.randbits(31)
    value = (seed + choice) & 0xFFFFFFFF
    return value - 1 if value == _RANDOM_SEED else value


@dataclass(slots=True)
class SeqSampler:
    """A sequence's sampler chain."""

    chain: Any
    """The ``llama_sampler`` chain (owned; freed by :func:`free_sampler`)."""
    grammar: Any | None = None
    """The grammar sampler inside ``chain``, when the argmax may be tried first."""

    def grammar_allows(self, token: int) -> bool:
        """Whether the grammar, in its current state, accepts ``token`` next."""
        if self.grammar is None:
            return True
        data = llama_cpp.llama_token_data(token, 0.0, 0.0)
        candidates = llama_cpp.llama_token_data_array(ctypes.pointer(data), 1, -1, False)
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(candidates))
        return not math.isinf(data.logit)

    def accept(self, token: int) -> None:
        """Advance the chain's state (grammar, penalties) past ``token``."""
        llama_cpp.llama_sampler_accept(self.chain, token)

    def reset(self) -> None:
        llama_cpp.llama_sampler_reset(self.chain)


def make_sampler(rt: LlamaRuntime, params: SamplingParams, seed: int) -> SeqSampler | None:
    """A sampler chain for one sequence, or None when plain argmax will do.

    Raises :class:`RequestError` if the grammar does not parse. The caller owns the
    chain and frees it with :func:`free_sampler`.
    """
    if params.is_greedy_plain:
        return None
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    grammar_first: Any | None = None
    try:
        if params.logit_bias:
            for token, _ in params.logit_bias:
                if not 0 <= token < rt.n_vocab:
                    raise RequestError(
                        f"logit_bias token {token} is outside the vocabulary "
                        f"(0..{rt.n_vocab - 1}).",
                        param="logit_bias",
                    )
            entries = [llama_cpp.llama_logit_bias(t, b) for t, b in params.logit_bias]
            biases = (llama_cpp.llama_logit_bias * len(entries))(*entries)
            add(chain, llama_cpp.llama_sampler_init_logit_bias(rt.n_vocab, len(entries), biases))
        if params.frequency_penalty or params.presence_penalty:
            add(
                chain,
                llama_cpp.llama_sampler_init_penalties(
                    rt.n_vocab,
                    _PENALTY_WINDOW,
                    1.0,
                    params.frequency_penalty,
                    params.presence_penalty,
                ),
            )
        if params.grammar is not None:
            grammar = llama_cpp.llama_sampler_init_grammar(
                rt.vocab, params.grammar.encode("utf-8"), b"root"
            )
            if not grammar:
                raise RequestError(
                    "The output format could not be compiled into a grammar.",
                    param="response_format",
                )
            add(chain, grammar)
            if (
                params.temperature == 0.0
                and not params.logit_bias
                and not (params.frequency_penalty or params.presence_penalty)
            ):
                grammar_first = grammar  # greedy under a grammar: argmax first
        if params.temperature == 0.0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            if params.top_p < 1.0:
                add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
            add(chain, llama_cpp.llama_sampler_init_dist(seed))
    except BaseException:
        llama_cpp.llama_sampler_free(chain)
        raise
    return SeqSampler(chain, grammar_first)


def free_sampler(sampler: SeqSampler | None) -> None:
    """Free a chain made by :func:`make_sampler` (and the samplers it holds)."""
    if sampler is not None and sampler.chain is not None:
        llama_cpp.llama_sampler_free(sampler.chain)
        sampler.chain = None
