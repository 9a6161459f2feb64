"""Splitting a stream of bytes into JSONL lines, with their numbers and offsets.

Lines are numbered from 1 as a text editor would (blank lines count), end at
``\\n``, lose a trailing ``\\r`` (CRLF files), and the first loses a UTF-8 BOM.
Offsets are byte positions in the stream, so a range of lines can be read again
later without scanning from the start: :mod:`batchd.engine.validate` cuts a
batch's input into shards at line offsets, and :mod:`batchd.engine.executor`
reads one shard's byte range back (``first_number``/``base_offset`` keep its
line numbers and offsets those of the whole file).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    """1-based line number in the file."""
    start: int
    """Byte offset of the line's first byte."""
    end: int
    """Byte offset just past the line's newline (or the end of the file)."""
    data: bytes
    """The line without its newline, trailing CR, or (first line) BOM."""
    too_long: bool = False
    """True when the line exceeded the length limit; ``data`` is then empty."""

    @property
    def blank(self) -> bool:
        return not self.too_long and not self.data.strip()


async def iter_lines(
    chunks: AsyncIterable[bytes],
    *,
    first_number: int = 1,
    base_offset: int = 0,
    max_line_bytes: int | None = None,
) -> AsyncIterator[Line]:
    """Yield every line of the byte stream ``chunks``.

    A line longer than ``max_line_bytes`` is yielded once with ``too_long=True``
    and its bytes are dropped as they arrive, so memory stays bounded.
    """
    number = first_number
    offset = base_offset  # offset of buf[0]
    buf = bytearray()
    skipping = False  # inside an over-long line
    async for chunk in chunks:
        if skipping:
            nl = chunk.find(b"\n")
            if nl < 0:
                offset += len(chunk)
                continue
            offset += nl + 1
            chunk = chunk[nl + 1 :]
            skipping = False
        buf += chunk
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            if max_line_bytes is not None and nl - pos > max_line_bytes:
                # A whole over-long line inside one chunk is as too long as one spanning chunks.
                yield Line(number, offset + pos, offset + nl + 1, b"", too_long=True)
            else:
                yield _make(number, offset + pos, offset + nl + 1, bytes(buf[pos:nl]))
            number += 1
            pos = nl + 1
        if pos:
            del buf[:pos]
            offset += pos
        if max_line_bytes is not None and len(buf) > max_line_bytes:
            yield Line(number, offset, offset + len(buf), b"", too_long=True)
            number += 1
            offset += len(buf)
            buf.clear()
            skipping = True
    if buf and not skipping:
        yield _make(number, offset, offset + len(buf), bytes(buf))


def _make(number: int, start: int, end: int, data: bytes) -> Line:
    if data.endswith(b"\r"):
        data = data[:-1]
    if start == 0 and data.startswith(BOM):
        data = data[len(BOM) :]
    return Line(number, start, end, data)
