"""A job inside the chat engine and the sequences it is decoded as."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from batchd.backends.local.generation import ChoiceOutput, GenerationJob, GenerationOutput
from batchd.backends.local.sampling import SeqSampler


@dataclass(eq=False, slots=True)
class Pending:
    """A job inside the engine: collects its choices until all are done."""

    job: GenerationJob
    future: asyncio.Future[GenerationOutput]
    tokens: list[int] = field(default_factory=list)
    choices: list[ChoiceOutput | None] = field(default_factory=list)
    remaining: int = 0
    cancelled: bool = False
    failed: bool = False

    @property
    def dropped(self) -> bool:
        """Nobody wants its sequences decoded any more."""
        return self.cancelled or self.failed


@dataclass(eq=False, slots=True)
class Seq:
    """One sequence being (or waiting to be) decoded."""

    pending: Pending
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

    def restart(self) -> None:
        """Back to the waiting line: forget its place in the cache and what it wrote."""
        if self.sampler is not None:
            self.sampler.reset()
        self.seq_id, self.n_past, self.next_token = -1, 0, None
        self.generated, self.text, self.stop_scan = 0, bytearray(), 0


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
