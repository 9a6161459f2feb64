"""Cutting a batch's request lines into shards, the unit a worker claims.

A shard runs on one worker. Cut at a fixed ``shard_size`` (1,000 lines), a small
batch would be one shard: one worker, and there only the share its key gets of
that one worker, however many workers run another key's work. So where several
workers are live, a batch is cut into :data:`PIECES_PER_WORKER` equal shards per
worker, never smaller than :data:`MIN_SHARD_LINES` lines (each shard costs a claim
and a completion in the database) and never larger than ``shard_size``: every
worker holding another key's work can take a piece of it. With one worker, shards
are ``shard_size`` as ever: the worker's own gate (engine/fair.py) shares it, and
one shard keeps a batch's lines in one prompt-prefix order (engine/prefix.py).

The size depends on the line count, known only at the end of the validating
pass; until the count passes ``pieces * shard_size`` (from where the size is
``shard_size`` anyway) each line's byte range is kept, 24 bytes a line.
"""

from __future__ import annotations

from array import array

from batchd.jsonl import Line
from batchd.store.records import ShardRecord

PIECES_PER_WORKER = 2
"""Shards per live worker a batch is cut into when ``shard_size`` allows: one for
each, and one more so a worker that is done early can help a slower one."""
MIN_SHARD_LINES = 4
"""The fewest lines in a shard (the last one excepted)."""


def pieces_for(workers: int) -> int:
    """Shards wanted for a batch while ``workers`` workers are live."""
    return PIECES_PER_WORKER * workers if workers > 1 else 1


def shard_lines(total: int, shard_size: int, pieces: int) -> int:
    """Lines per shard for a batch of ``total`` lines cut into about ``pieces``."""
    wanted = -(-total // pieces)  # ceiling division
    return max(1, min(shard_size, max(MIN_SHARD_LINES, wanted)))


class ShardCutter:
    """Fed the valid request lines in file order; :meth:`finish` returns the shards."""

    def __init__(self, batch_id: str, shard_size: int, *, workers: int = 1) -> None:
        self._batch_id = batch_id
        self._size = shard_size
        self._pieces = pieces_for(workers)
        self._shards: list[ShardRecord] = []
        # Lines not yet in a shard: their start and end offsets and line numbers.
        self._starts = array("q")
        self._ends = array("q")
        self._numbers = array("q")
        self._buffering = True

    def feed(self, line: Line) -> None:
        self._starts.append(line.start)
        self._ends.append(line.end)
        self._numbers.append(line.number)
        n = len(self._starts)
        if self._buffering and n >= self._pieces * self._size:
            self._buffering = False  # from here on the size is shard_size
        if not self._buffering and n >= self._size:
            self._cut(self._size)

    def finish(self) -> list[ShardRecord]:
        pending = len(self._starts)
        if pending:
            size = shard_lines(pending, self._size, self._pieces) if self._buffering else self._size
            self._cut(size)
        return self._shards

    def _cut(self, size: int) -> None:
        """Turn the pending lines into shards of ``size`` (the last may be shorter)."""
        starts, ends, numbers = self._starts, self._ends, self._numbers
        for i in range(0, len(starts), size):
            j = min(i + size, len(starts)) - 1
            self._shards.append(
                ShardRecord(
                    batch_id=self._batch_id,
                    shard_no=len(self._shards),
                    start_offset=starts[i],
                    end_offset=ends[j],
                    first_line=numbers[i],
                    last_line=numbers[j],
                    n_tasks=j - i + 1,
                )
            )
        del starts[:], ends[:], numbers[:]
