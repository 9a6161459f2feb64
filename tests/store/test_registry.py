"""The worker registry: each worker names the backends it sends to, the tenants it has
work for there and the slots it may hold (the shared limits of engine/limits.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from sqlalchemy import insert

from batchd.store import schema
from batchd.store.base import Store
from batchd.store.records import BackendUse, RegistryDecision
from batchd.store.sql import SqlStore
from store.pg import fresh_database

pytestmark = pytest.mark.anyio


def says(backends: Mapping[str, BackendUse]) -> RegistryDecision:
    return lambda _live: backends


def use(*keys: str, holds: int = 0) -> BackendUse:
    return BackendUse(keys=list(keys), holds=holds)


async def test_registrations_name_backends_with_their_tenants_and_slots(store: Store) -> None:
    await store.register_worker("w1", 10.0, 0.0, says({"up": use("light", "heavy", holds=3),
                                                       "local": use()}))  # fmt: skip
    await store.register_worker("w2", 11.0, 0.0, says({"up": use("light", holds=5)}))
    await store.register_worker("w3", 2.0, 0.0, says({"up": use("old")}))  # silent since: not live
    assert await store.live_workers(5.0) == {
        "w1": {"local": use(), "up": use("heavy", "light", holds=3)},
        "w2": {"up": use("light", holds=5)},
    }
    seen: list[dict[str, dict[str, BackendUse]]] = []

    def decide(live: dict[str, dict[str, BackendUse]]) -> dict[str, BackendUse]:
        seen.append(live)
        return {}  # nothing to send any more

    await store.register_worker("w2", 12.0, 5.0, decide)
    # decide saw the live workers as they stood (w2's own row among them, w3 not).
    assert seen == [
        {
            "w1": {"local": use(), "up": use("heavy", "light", holds=3)},
            "w2": {"up": use("light", holds=5)},
        }
    ]
    assert (await store.live_workers(5.0))["w2"] == {}


async def test_rows_an_older_version_wrote_read_as_backends_holding_nothing(
    store: Store,
) -> None:
    # What workers of previous versions wrote while both run against one database: a
    # bare list of backends, then each backend's tenants.
    assert isinstance(store, SqlStore)
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(schema.workers),
            [
                {"owner": "v1", "heartbeat_at": 10.0, "backends": ["up"]},
                {"owner": "v2", "heartbeat_at": 10.0, "backends": {"up": ["light"]}},
            ],
        )
    assert await store.live_workers(5.0) == {"v1": {"up": use()}, "v2": {"up": use("light")}}


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database two stores can open at once (not an in-memory one)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'batchd.db'}"
    else:
        with fresh_database() as url:
            yield url


async def test_no_two_registrations_decide_on_the_same_view(shared_url: str) -> None:
    # Two processes (two stores on one database) each take whatever of a limit of 16
    # the other does not hold, at the same moment: one must see the other's part.
    stores = [SqlStore(shared_url), SqlStore(shared_url)]
    for s in stores:
        await s.open()

    def greedy(me: str) -> RegistryDecision:
        def decide(live: dict[str, dict[str, BackendUse]]) -> dict[str, BackendUse]:
            others = sum(u["holds"] for o, b in live.items() if o != me for u in b.values())
            return {"up": use(holds=16 - others)}

        return decide

    try:
        for round_ in range(5):
            await stores[0].forget_workers(owners=["w1", "w2"])
            await asyncio.gather(
                stores[0].register_worker("w1", 10.0 + round_, 0.0, greedy("w1")),
                stores[1].register_worker("w2", 10.0 + round_, 0.0, greedy("w2")),
            )
            live = await stores[0].live_workers(0.0)
            parts = sorted(b["up"]["holds"] for b in live.values())
            assert parts == [0, 16], parts
    finally:
        for s in stores:
            await s.close()
