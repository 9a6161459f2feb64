"""The worker registry: heartbeats name each backend a worker sends to and the tenants
it has work for there (the weighted split of engine/limits.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from batchd.store import schema
from batchd.store.base import Store
from batchd.store.sql import SqlStore

pytestmark = pytest.mark.anyio


async def test_heartbeats_name_backends_with_their_tenants(store: Store) -> None:
    await store.heartbeat_worker("w1", 10.0, {"up": ["light", "heavy"], "local": []})
    await store.heartbeat_worker("w2", 11.0, {"up": ["light"]})
    await store.heartbeat_worker("w3", 2.0, {"up": ["old"]})  # silent since: not live
    assert await store.live_workers(5.0) == {
        "w1": {"local": [], "up": ["heavy", "light"]},
        "w2": {"up": ["light"]},
    }
    await store.heartbeat_worker("w2", 12.0, {})  # nothing to send any more
    assert (await store.live_workers(5.0))["w2"] == {}


async def test_a_row_listing_backends_only_reads_as_backends_without_tenants(
    store: Store,
) -> None:
    # What a worker of the previous version wrote while both run against one database.
    assert isinstance(store, SqlStore)
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(schema.workers).values(owner="old", heartbeat_at=10.0, backends=["up"])
        )
    assert await store.live_workers(5.0) == {"old": {"up": []}}
