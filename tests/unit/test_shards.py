"""Cutting a batch into shards (engine/shards.py): with several workers live, small
batches into a few per worker, so each can take a piece; never past ``shard_size``;
with one worker, ``shard_size`` as before."""

from __future__ import annotations

import itertools

import pytest

from batchd.engine.shards import MIN_SHARD_LINES, ShardCutter, pieces_for, shard_lines
from batchd.jsonl import Line
from batchd.store.records import ShardRecord


def cut(total: int, shard_size: int, *, workers: int = 8, gap_every: int = 0) -> list[ShardRecord]:
    """Shards of ``total`` 10-byte request lines, a blank line after every
    ``gap_every`` of them (blank lines are not fed, but their numbers and bytes count)."""
    cutter = ShardCutter("batch_x", shard_size, workers=workers)
    number, offset = 1, 0
    for i in range(total):
        cutter.feed(Line(number=number, start=offset, end=offset + 10, data=b"{}"))
        number, offset = number + 1, offset + 10
        if gap_every and (i + 1) % gap_every == 0:
            number, offset = number + 1, offset + 1
    return cutter.finish()


@pytest.mark.parametrize(
    ("total", "shard_size", "workers", "sizes"),
    [
        (40, 1000, 2, [10] * 4),  # two workers: two pieces each
        (40, 1000, 8, [4] * 10),  # eight: as many of four lines as there are
        (3, 1000, 8, [3]),  # too small to split
        (200, 20, 8, [13] * 15 + [5]),  # about sixteen
        (100, 5, 8, [5] * 20),  # shard_size stays the maximum
        (3000, 50, 2, [50] * 60),
        (20_000, 1000, 8, [1000] * 20),  # large: shard_size, as before
        (16_001, 1000, 8, [1000] * 16 + [1]),
        (4001, 1000, 2, [1000] * 4 + [1]),
        (2500, 1000, 1, [1000, 1000, 500]),  # one worker: shard_size, as before
        (40, 1000, 1, [40]),
    ],
)
def test_shard_sizes(total: int, shard_size: int, workers: int, sizes: list[int]) -> None:
    assert [s.n_tasks for s in cut(total, shard_size, workers=workers)] == sizes
    assert min(shard_lines(total, shard_size, pieces_for(workers)), total) == sizes[0]


def test_shards_cover_every_line_once_in_order() -> None:
    shards = cut(1234, 100, gap_every=7)
    assert [s.shard_no for s in shards] == list(range(len(shards)))
    assert sum(s.n_tasks for s in shards) == 1234
    for before, after in itertools.pairwise(shards):
        assert before.end_offset <= after.start_offset
        assert before.last_line < after.first_line
    assert shards[0].first_line == 1 and shards[0].start_offset == 0
    assert all(s.batch_id == "batch_x" for s in shards)


def test_sizes_are_between_the_minimum_and_shard_size() -> None:
    for total in range(1, 3000, 37):
        sizes = [s.n_tasks for s in cut(total, 100)]
        assert max(sizes) <= 100
        assert min(sizes[:-1], default=MIN_SHARD_LINES) >= MIN_SHARD_LINES
        if total >= 16 * MIN_SHARD_LINES:  # enough lines: about sixteen for eight workers
            assert len(sizes) >= min(12, -(-total // 100)), total


def test_no_lines_no_shards() -> None:
    assert cut(0, 1000) == []
