"""The key directory and the key ring on a real (SQLite file) store: which key a
secret is, a key's limits and weight, when a change is seen, last use written back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batchd.apikeys.admin import KeyAdminError, create_key, list_keys, revoke_key
from batchd.apikeys.directory import KeyDirectory
from batchd.apikeys.secrets import digest_of, label_of, tenant_of
from batchd.engine.queue_limits import QueueLimits
from batchd.errors import AuthenticationFailed
from batchd.server.auth import OPEN_TENANT, KeyRing
from batchd.store.base import Store
from batchd.store.sql import SqlStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    # A file, not :memory: (one shared connection, where a concurrent read's rollback
    # can undo a write in progress: the refresh loop reads while the test writes).
    s: Store = SqlStore(f"sqlite:///{tmp_path / 'keys.db'}")
    await s.open()
    yield s
    await s.close()


async def test_limits_and_weight_per_key_over_the_server_defaults(store: Store) -> None:
    rec, secret = await create_key(store, "a", max_enqueued_requests=5, weight=2.0)
    keys = KeyDirectory(store, defaults=QueueLimits(max_tokens=1000, max_requests=50))
    await keys.load()
    assert rec.tenant == tenant_of(secret) and rec.digest == digest_of(secret)
    assert keys.limits_for(rec.tenant) == QueueLimits(max_tokens=1000, max_requests=5)
    assert keys.weight(rec.tenant) == 2.0
    assert keys.name_for(rec.tenant) == "a"
    # A tenant with no key row (a static key): the defaults, weight 1, a digest label.
    other = tenant_of("static-secret")
    assert keys.limits_for(other) == QueueLimits(max_tokens=1000, max_requests=50)
    assert keys.weight(other) == 1.0
    assert keys.name_for(other) == label_of(other) == f"static-{other[:8]}"
    assert "static-secret" not in keys.name_for(other)


async def test_the_ring_is_open_until_a_key_exists_even_a_revoked_one(store: Store) -> None:
    keys = KeyDirectory(store, refresh=0.02)
    await keys.load()
    ring = KeyRing([], keys)
    assert ring.open and ring.tenant_for(None) == OPEN_TENANT
    keys.start()
    try:
        rec, secret = await create_key(store, "a")
        for _ in range(100):
            if not ring.open:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(AuthenticationFailed) as missing:
            ring.tenant_for(None)
        assert missing.value.code == "missing_api_key"
        assert ring.tenant_for(f"Bearer {secret}") == rec.tenant
        await revoke_key(store, "a")
        for _ in range(100):
            found = keys.lookup(rec.digest)
            if found is not None and found.revoked:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(AuthenticationFailed) as revoked:
            ring.tenant_for(f"Bearer {secret}")
        assert revoked.value.code == "invalid_api_key" and "revoked" in str(revoked.value)
        assert not ring.open  # revoking the last key does not reopen the server
        with pytest.raises(AuthenticationFailed) as wrong:
            ring.tenant_for("Bearer sk-batchd-wrong")
        assert wrong.value.code == "invalid_api_key"
    finally:
        await keys.stop()


async def test_static_and_database_keys_side_by_side(store: Store) -> None:
    rec, secret = await create_key(store, "db")
    keys = KeyDirectory(store)
    await keys.load()
    ring = KeyRing(["static-one"], keys)
    assert ring.tenant_for("Bearer static-one") == tenant_of("static-one")
    assert ring.tenant_for(f"Bearer {secret}") == rec.tenant != tenant_of("static-one")


async def test_last_use_is_written_back_on_stop(store: Store) -> None:
    _rec, secret = await create_key(store, "a")
    keys = KeyDirectory(store)
    await keys.load()
    KeyRing([], keys).tenant_for(f"Bearer {secret}")
    assert (await store.list_api_keys())[0].last_used_at is None  # no write per request
    await keys.stop()
    assert (await store.list_api_keys())[0].last_used_at is not None


async def test_admin_refuses_bad_names_weights_and_reuse(store: Store) -> None:
    for name in ("", "has space", "-leading", "x" * 65, "naïve"):
        with pytest.raises(KeyAdminError, match="Invalid key name"):
            await create_key(store, name)
    for weight in (0.0, -1.0, 1001.0):
        with pytest.raises(KeyAdminError, match="Invalid weight"):
            await create_key(store, "w", weight=weight)
    await create_key(store, "a")
    await revoke_key(store, "a")
    with pytest.raises(KeyAdminError, match="already exists"):
        await create_key(store, "a")
    with pytest.raises(KeyAdminError, match="No key named"):
        await revoke_key(store, "nobody")
    rows = await list_keys(store, static_keys=["s1"])
    assert [(r.name, r.as_json()["status"]) for r in rows] == [
        ("a", "revoked"), (label_of(tenant_of("s1")), "static"),
    ]  # fmt: skip
