"""Retry rounds: the lines a round left without an answer, cut into the next round's chunks.

A retry line is read back from its first-round chunk file by the offset the
ledger kept for it, so the input is never parsed again and nothing is held in
memory but one open file per first-round chunk.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from batchd.pipeline import crashpoints
from batchd.pipeline.config import RunConfig
from batchd.pipeline.display import Display
from batchd.pipeline.ledger import Ledger
from batchd.pipeline.planner import ChunkWriter
from batchd.pipeline.states import Answered, LineStatus


def retry_statuses(config: RunConfig) -> tuple[Answered, ...]:
    """The outcomes a retry round sends again (cut-off answers only with ``retry_length``)."""
    if config.retry_length:
        return (LineStatus.FAILED, LineStatus.LENGTH)
    return (LineStatus.FAILED,)


def next_round(ledger: Ledger, config: RunConfig, state_dir: Path, display: Display) -> bool:
    """Put this round's failed lines into new chunks; False when there is nothing to retry."""
    round_ = ledger.current_round()
    if round_ >= config.max_retry_rounds:
        return False
    nxt = round_ + 1
    chunk_dir = state_dir / "chunks"
    writer = ChunkWriter(chunk_dir, nxt, config.max_requests_per_batch, config.max_bytes_per_batch)
    members: dict[str, str] = {}
    with SourceLines(ledger) as sources:
        for entry in ledger.retryable(retry_statuses(config)):
            placed = writer.add(
                entry.custom_id,
                sources.read(entry.src_chunk, entry.src_offset, entry.src_length),
            )
            members[entry.custom_id] = placed.src_chunk
    chunks = writer.close()
    if not chunks:
        return False
    crashpoints.reach("round")
    ledger.start_round(
        nxt, [(c.id, chunk_dir / f"{c.id}.jsonl", c.requests, c.bytes) for c in chunks], members
    )
    display.event(f"retry round {nxt}: {len(members)} lines in {len(chunks)} batch(es)")
    return True


class SourceLines:
    """Reads original request lines back from the first-round chunk files."""

    def __init__(self, ledger: Ledger) -> None:
        self._paths = {c.id: Path(c.path) for c in ledger.chunks(round_=0)}
        self._open: dict[str, IO[bytes]] = {}

    def __enter__(self) -> SourceLines:
        return self

    def __exit__(self, *exc: object) -> None:
        for fh in self._open.values():
            fh.close()

    def read(self, chunk_id: str, offset: int, length: int) -> bytes:
        fh = self._open.get(chunk_id)
        if fh is None:
            fh = self._open[chunk_id] = self._paths[chunk_id].open("rb")
        fh.seek(offset)
        return fh.read(length)
