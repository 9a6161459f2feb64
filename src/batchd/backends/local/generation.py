"""What the chat engine is asked for and what it answers: jobs, outputs, counters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchd.backends.local.params import SamplingParams


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
    """Counters, for logs, tests and benchmarks."""

    decode_calls: int = 0
    prefill_tokens: int = 0
    """Prompt tokens actually run through the model (shared prefixes count once)."""
    shared_tokens: int = 0
    """Prompt tokens a sequence got from the shared prefix instead of prefilling them."""
    generated_tokens: int = 0
    max_active: int = 0
    preemptions: int = 0
