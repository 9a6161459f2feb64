"""iter_lines: numbering, offsets, CRLF, BOM, missing final newline, over-long lines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest

from batchd.jsonl import BOM, Line, iter_lines


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def lines_of(parts: Iterable[bytes], **kwargs: object) -> list[Line]:
    async def collect() -> list[Line]:
        return [line async for line in iter_lines(_chunks(parts), **kwargs)]  # type: ignore[arg-type]

    return asyncio.run(collect())


def split_every(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


DATA = b'{"a": 1}\r\n\r\n{"b": 2}\n   \n{"c": 3}'


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_numbers_offsets_and_data_whatever_the_chunking(chunk: int) -> None:
    got = lines_of(split_every(DATA, chunk))
    assert [(x.number, x.data, x.blank) for x in got] == [
        (1, b'{"a": 1}', False),
        (2, b"", True),
        (3, b'{"b": 2}', False),
        (4, b"   ", True),
        (5, b'{"c": 3}', False),  # no trailing newline
    ]
    for x in got:
        raw = DATA[x.start : x.end]
        assert raw.rstrip(b"\n").rstrip(b"\r") == x.data
    assert got[-1].end == len(DATA)
    assert [x.start for x in got[1:]] == [x.end for x in got[:-1]]


def test_bom_is_dropped_from_the_first_line_only() -> None:
    data = BOM + b'{"a": 1}\n' + BOM + b'{"b": 2}\n'
    got = lines_of(split_every(data, 2))
    assert got[0].data == b'{"a": 1}'
    assert got[0].start == 0
    assert got[1].data == BOM + b'{"b": 2}'  # a BOM mid-file is content


def test_base_offset_and_first_number() -> None:
    got = lines_of([b"x\ny\n"], first_number=10, base_offset=100)
    assert [(x.number, x.start, x.end) for x in got] == [(10, 100, 102), (11, 102, 104)]


def test_empty_stream_has_no_lines() -> None:
    assert lines_of([]) == []
    assert lines_of([b""]) == []


def test_trailing_newline_makes_no_extra_line() -> None:
    assert [x.data for x in lines_of([b"a\nb\n"])] == [b"a", b"b"]


@pytest.mark.parametrize("chunk", [1, 4, 64, 10_000])
def test_too_long_lines_are_flagged_and_skipped(chunk: int) -> None:
    data = b"short\n" + b"x" * 50 + b"\nok\n" + b"y" * 50
    got = lines_of(split_every(data, chunk), max_line_bytes=20)
    assert [(x.number, x.too_long, x.data) for x in got] == [
        (1, False, b"short"),
        (2, True, b""),
        (3, False, b"ok"),
        (4, True, b""),
    ]
    assert not got[1].blank
    assert got[2].start == data.index(b"ok")


def test_a_line_exactly_at_the_limit_is_fine() -> None:
    got = lines_of([b"x" * 20 + b"\n" + b"y" * 21 + b"\n"], max_line_bytes=20)
    assert [x.too_long for x in got] == [False, True]
