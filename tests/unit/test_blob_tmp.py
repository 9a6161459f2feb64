"""Temporary parts of blob writes: a restarting process removes only dead writers' parts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from batchd.blobs.local import LocalBlobStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_a_second_store_keeps_live_parts_and_drops_dead_ones(tmp_path: Path) -> None:
    first = LocalBlobStore(tmp_path)
    writer = await first.open_writer("file-aaaaaaaaaaaaaaaa")
    await writer.write(b"in progress")
    dead = tmp_path / "tmp" / f"file-bbbbbbbbbbbbbbbb.{_dead_pid()}.abcd1234.part"
    dead.write_bytes(b"left by a crash")
    LocalBlobStore(tmp_path)  # another process starting on the same directory
    assert not dead.exists()
    # The live upload is untouched and still completes.
    assert await writer.commit() == len(b"in progress")
    assert (tmp_path / "files" / "file-aaaaaaaaaaaaaaaa").read_bytes() == b"in progress"
