"""A backend slot is free once the backend has answered, not once the result is
committed: a slow commit (PostgreSQL's waits for a WAL flush) must not idle the
model server.

Real parts: the test upstream (tests/upstream_server.py), a SQLite store, local
blobs, the real validator, executor and group-commit writer. The one instrument:
``GatedStore``, a real SqlStore whose ``record_results`` waits for the test to
open a gate, standing in for a commit that takes long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from batchd.backends.registry import build_router
from batchd.blobs.local import LocalBlobStore
from batchd.engine.executor import Executor, ShardJob
from batchd.engine.validate import validate_batch
from batchd.engine.writer import ResultWriter
from batchd.retry import RetryPolicy
from batchd.settings import Settings
from batchd.states import BatchStatus
from batchd.store.records import BatchRecord, FileRecord, ResultRow
from batchd.store.sql import SqlStore
from upstream_server import UpstreamServer

pytestmark = pytest.mark.anyio
LINES = 3


class GatedStore(SqlStore):
    """A real store whose result commits wait for ``gate`` (a slow commit)."""

    gate: asyncio.Event

    async def record_results(self, rows: Sequence[ResultRow]) -> int:
        await self.gate.wait()
        return await super().record_results(rows)


async def test_backend_slots_are_not_held_through_the_commit(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    store = GatedStore(f"sqlite:///{tmp_path / 'batchd.db'}")
    store.gate = asyncio.Event()
    await store.open()
    blobs = LocalBlobStore(tmp_path / "blobs")
    settings = Settings(
        data_dir=tmp_path, upstream=upstream.base_url, upstream_concurrency=1, local_enabled=False
    )
    router = build_router(settings)
    writer = ResultWriter(store)
    writer.start()
    try:
        lines = [
            {
                "custom_id": f"c{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "test-model", "messages": [{"role": "user", "content": f"{i}"}]},
            }
            for i in range(LINES)
        ]
        out = await blobs.open_writer("file-aaaaaaaaaaaa")
        await out.write(b"".join(orjson.dumps(x) + b"\n" for x in lines))
        size = await out.commit()
        await store.insert_file(
            FileRecord("file-aaaaaaaaaaaa", "t", "in.jsonl", "batch", size, created_at=1)
        )
        batch = BatchRecord(
            id="batch_aaaaaaaaaaaa",
            tenant="t",
            input_file_id="file-aaaaaaaaaaaa",
            endpoint="/v1/chat/completions",
            completion_window="24h",
            status=BatchStatus.VALIDATING,
            created_at=1,
            expires_at=2**40,
        )
        await store.insert_batch(batch)
        claimed = await store.claim_validation("me", time.time(), time.time() + 60)
        assert claimed is not None
        await validate_batch(
            claimed, owner="me", store=store, blobs=blobs, max_tasks=10, max_errors=10,
            max_line_bytes=1 << 20, shard_size=100,
        )  # fmt: skip
        shard = await store.claim_shard("me", time.time(), time.time() + 60)
        assert shard is not None
        executor = Executor(
            store=store,
            blobs=blobs,
            router=router,
            policy=RetryPolicy(max_attempts=1, base=0.01, cap=0.01),
            writer=writer,
            cancel_grace=5,
        )
        job = ShardJob(shard=shard, endpoint=batch.endpoint, input_file_id=batch.input_file_id)
        run = asyncio.create_task(executor.run(job, lambda: False))
        # With one slot, every line reaches the upstream while no result is committed.
        for _ in range(500):  # up to 10 s on a loaded machine
            if upstream.stats.total >= LINES:
                break
            await asyncio.sleep(0.02)
        assert upstream.stats.total == LINES
        assert await store.done_lines(batch.id, 1, LINES) == set()
        assert not run.done()  # the shard is not finished before its results are durable
        store.gate.set()
        assert await asyncio.wait_for(run, 10) is True
        assert await store.done_lines(batch.id, 1, LINES) == set(range(1, LINES + 1))
    finally:
        store.gate.set()
        await writer.close()
        await router.aclose()
        await blobs.close()
        await store.close()
