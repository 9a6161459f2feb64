"""Claims racing another process on one SQLite file (two engine processes of one
``batchd serve``, or ``batchd worker`` beside it).

Python's sqlite3 runs a SELECT outside the write transaction that the UPDATE after
it begins, so another process can commit in between: here the other process is a
plain sqlite3 connection that writes right after the claim's candidate SELECT."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from batchd.store.sql import SqlStore
from store.test_state_machine import T0, A, B, new_batch, shards_for

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    s = SqlStore(f"sqlite:///{tmp_path / 'batchd.db'}")
    await s.open()
    yield s
    await s.close()


def after_select(
    store: SqlStore, marker: str, other_process: Callable[[sqlite3.Connection], None]
) -> None:
    """Run ``other_process`` once, on its own connection, right after the first SELECT
    whose SQL contains ``marker``."""
    path = store.engine.url.database
    assert path is not None
    fired = False

    @event.listens_for(store.engine.sync_engine, "after_cursor_execute")
    def _between(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal fired
        if fired or not statement.lstrip().startswith("SELECT") or marker not in statement:
            return
        fired = True
        other = sqlite3.connect(path, timeout=30)
        try:
            other_process(other)
            other.commit()
        finally:
            other.close()


async def test_a_batch_validated_meanwhile_by_another_process_is_not_claimed(
    store: SqlStore,
) -> None:
    b = await new_batch(store)

    def validate_it(conn: sqlite3.Connection) -> None:
        # The other process claimed, validated and started the batch: run phase, no lease.
        conn.execute("UPDATE batches SET phase = 'run', status = 'in_progress' WHERE id = ?",
                     (b.id,))  # fmt: skip

    after_select(store, "ORDER BY batches.priority", validate_it)
    assert await store.claim_validation(B, T0, T0 + 30) is None
    # Not leased in its run phase: it can be finalized (it has no shards left to run).
    assert await store.claim_finalization(A, T0 + 1, T0 + 31) is not None


async def test_a_shard_finished_meanwhile_by_another_process_is_not_claimed(
    store: SqlStore,
) -> None:
    b = await new_batch(store)
    assert await store.claim_validation(A, T0, T0 + 30) is not None
    shards = shards_for(b.id, 1)
    assert await store.start_batch(b.id, A, total=10, model="m", shards=shards, now=5)

    def run_it(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE shards SET done = 1 WHERE batch_id = ?", (b.id,))

    after_select(store, "shards.shard_no", run_it)
    assert await store.claim_shard(B, T0 + 1, T0 + 31) is None  # run twice, results twice


async def test_a_batch_finalized_meanwhile_by_another_process_is_not_finalized_again(
    store: SqlStore,
) -> None:
    # Leasing it anyway moved a finished batch back to its finalize phase: it was then
    # finalized twice (output files written again, its webhook event delivered twice).
    b = await new_batch(store)
    assert await store.claim_validation(A, T0, T0 + 30) is not None
    assert await store.start_batch(b.id, A, total=0, model="m", shards=[], now=5)

    def finalize_it(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE batches SET phase = 'done', status = 'completed' WHERE id = ?",
                     (b.id,))  # fmt: skip

    after_select(store, "ORDER BY batches.priority", finalize_it)
    assert await store.claim_finalization(B, T0 + 1, T0 + 31) is None
    got = await store.get_batch(b.id, tenant=None)
    assert got is not None and (got.phase, got.status) == ("done", "completed")
