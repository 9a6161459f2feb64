"""The seam for file bytes: a key-value store of immutable blobs, streamed both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol


class BlobWriter(Protocol):
    """An in-progress blob. Nothing is visible under its key until :meth:`commit`."""

    size: int

    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> int:
        """Make the blob durable and visible; returns its size in bytes."""
        ...

    async def abort(self) -> None:
        """Throw the partial blob away."""
        ...


class BlobStore(Protocol):
    async def open_writer(self, key: str) -> BlobWriter: ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes ``[start, end)`` of a blob in chunks."""
        ...

    async def delete(self, key: str) -> None:
        """Remove a blob; a missing one is not an error."""
        ...

    async def concat(self, key: str, sources: Sequence[tuple[str, int]]) -> int:
        """Make blob ``key`` of the blobs ``sources`` (``(key, size)``) in that order,
        without holding them in memory; ``key`` appears whole or not at all. Returns its
        size. A missing source raises FileNotFoundError."""
        ...

    async def close(self) -> None: ...
