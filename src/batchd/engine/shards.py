"""Cutting a batch's request lines into shards, the unit a worker claims.

A shard runs on one worker. Cut at a fixed ``shard_size`` (1,000 lines), a small
batch would be one shard: one worker, and there only the share its key gets of
that one worker, however many workers run another key's work. So a batch is cut
into about :data:`TARGET_SHARDS` equal shards, never smaller than
:data:`MIN_SHARD_LINES` lines (each shard costs a claim and a completion in the
database) and never larger than ``shard_size``: every worker holding another key's
work can take a piece of it.

The size depends on the line count, known only at the end of the validating
pass; until the count passes ``TARGET_SHARDS * shard_size`` (from where the size
is ``shard_size`` anyway) each line's byte range is kept, 24 bytes a line.
"""

from __future__ import annotations

from array import array

from batchd.jsonl import Line
from batchd.store.records import ShardRecord

TARGET_SHARDS = 16
"""Shards a batch is cut into when ``shard_size`` allows (more workers than this
rarely hold one backend's work at once)."""
MIN_SHARD_LINES = 4
"""The fewest lines in a shard (the last one excepted)."""


def shard_lines(total: int, shard_size: int) -> int:
    """Lines per shard for a batch of ``total`` lines."""
    wanted = -(-total // TARGET_SHARDS)  # ceiling division
    return max(1, min(shard_size, max(MIN_SHARD_LINES, wanted)))


class ShardCutter:
    """Fed the valid request lines in file order; :meth:`finish` returns the shards."""

    def __init__(self, batch_id: str, shard_size: int) -> None:
        self._batch_id = batch_id
        self._size = shard_size
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
        if self._buffering and n >= TARGET_SHARDS * self._size:
            self._buffering = False  # from here on the size is shard_size
        if not self._buffering and n >= self._size:
            self._cut(self._size)

    def finish(self) -> list[ShardRecord]:
        pending = len(self._starts)
        if pending:
            self._cut(shard_lines(pending, self._size) if self._buffering else self._size)
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
