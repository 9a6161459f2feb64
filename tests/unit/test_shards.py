"""Cutting a batch into shards (engine/shards.py): small batches into several, so
several workers can each take a piece; never past ``shard_size``."""

from __future__ import annotations

import itertools

import pytest

from batchd.engine.shards import MIN_SHARD_LINES, TARGET_SHARDS, ShardCutter, shard_lines
from batchd.jsonl import Line
from batchd.store.records import ShardRecord


def cut(total: int, shard_size: int, *, gap_every: int = 0) -> list[ShardRecord]:
    """Shards of ``total`` 10-byte request lines, a blank line after every
    ``gap_every`` of them (blank lines are not fed, but their numbers and bytes count)."""
    cutter = ShardCutter("batch_x", shard_size)
    number, offset = 1, 0
    for i in range(total):
        cutter.feed(Line(number=number, start=offset, end=offset + 10, data=b"{}"))
        number, offset = number + 1, offset + 10
        if gap_every and (i + 1) % gap_every == 0:
            number, offset = number + 1, offset + 1
    return cutter.finish()


@pytest.mark.parametrize(
    ("total", "shard_size", "sizes"),
    [
        (40, 1000, [4] * 10),  # the test batches: ten shards of four
        (3, 1000, [3]),  # too small to split
        (200, 20, [13] * 15 + [5]),  # about sixteen
        (100, 5, [5] * 20),  # shard_size stays the maximum
        (3000, 50, [50] * 60),
        (20_000, 1000, [1000] * 20),  # large: shard_size, as before
        (16_001, 1000, [1000] * 16 + [1]),
    ],
)
def test_shard_sizes(total: int, shard_size: int, sizes: list[int]) -> None:
    assert [s.n_tasks for s in cut(total, shard_size)] == sizes
    assert min(shard_lines(total, shard_size), total) == sizes[0]


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
        if total >= TARGET_SHARDS * MIN_SHARD_LINES:  # enough lines: about sixteen
            assert len(sizes) >= min(TARGET_SHARDS * 3 // 4, -(-total // 100)), total


def test_no_lines_no_shards() -> None:
    assert cut(0, 1000) == []
