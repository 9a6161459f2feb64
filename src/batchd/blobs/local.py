"""Blobs as files in a directory: the default storage.

A blob is written to ``tmp/`` and renamed into ``files/`` only after an fsync, so
a crash never leaves a half-written file under a real key.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import BinaryIO

from batchd.ids import is_valid_id

CHUNK = 1 << 20


class LocalBlobWriter:
    def __init__(self, final: Path, tmp: Path) -> None:
        self._final = final
        self._tmp = tmp
        self._fh: BinaryIO = open(tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        self._buf = bytearray()
        self.size = 0

    async def write(self, data: bytes) -> None:
        self._buf += data
        self.size += len(data)
        if len(self._buf) >= CHUNK:
            chunk = bytes(self._buf)
            self._buf.clear()
            await asyncio.to_thread(self._fh.write, chunk)

    async def commit(self) -> int:
        chunk = bytes(self._buf)
        self._buf.clear()
        await asyncio.to_thread(self._finish, chunk)
        return self.size

    def _finish(self, chunk: bytes) -> None:
        self._fh.write(chunk)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self._final)
        _fsync_dir(self._final.parent)

    async def abort(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self._files = root / "files"
        self._tmp = root / "tmp"
        self._files.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        # Partial writes of a process that died can never complete: drop them. Another
        # live process may share this directory, so only dead writers' parts go.
        for leftover in self._tmp.iterdir():
            if not _writer_alive(leftover.name):
                leftover.unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        # Keys are ids batchd issued; refusing anything else keeps user input out of paths.
        if not is_valid_id(key):
            raise ValueError(f"not a blob key: {key!r}")
        return self._files / key

    async def open_writer(self, key: str) -> LocalBlobWriter:
        final = self._path(key)
        tmp = self._tmp / f"{key}.{os.getpid()}.{secrets.token_hex(4)}.part"
        return await asyncio.to_thread(LocalBlobWriter, final, tmp)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        fh = await asyncio.to_thread(open, path, "rb")
        try:
            if start:
                fh.seek(start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                size = CHUNK if remaining is None else min(CHUNK, remaining)
                chunk = await asyncio.to_thread(fh.read, size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            fh.close()

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    async def concat(self, key: str, sources: Sequence[tuple[str, int]]) -> int:
        # Streamed through a temp file that is renamed into place after an fsync (as any
        # write is): a crash leaves the whole blob or only a temp file, dropped at start.
        writer = await self.open_writer(key)
        try:
            for source, _size in sources:
                async for chunk in self.read(source):
                    await writer.write(chunk)
            return await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def close(self) -> None:
        return None


def _writer_alive(name: str) -> bool:
    """Whether the process that is writing the part file ``name`` still runs."""
    parts = name.split(".")
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
