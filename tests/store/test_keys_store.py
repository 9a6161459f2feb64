"""The store contract for API keys and usage per tenant, on every store (SQLite with
and without its fast paths, PostgreSQL)."""

from __future__ import annotations

import pytest

from batchd.store.base import Store
from batchd.store.key_records import ApiKeyRecord, TenantUsage
from store.test_state_machine import row, started

pytestmark = pytest.mark.anyio


def key(name: str, **kw: object) -> ApiKeyRecord:
    values: dict[str, object] = {
        "name": name, "digest": f"d-{name}", "tenant": f"t-{name}", "created_at": 100,
    }  # fmt: skip
    values.update(kw)
    return ApiKeyRecord(**values)  # type: ignore[arg-type]


async def test_keys_are_unique_by_name_digest_and_tenant(store: Store) -> None:
    assert await store.insert_api_key(key("a", max_enqueued_tokens=10, weight=2.5))
    assert not await store.insert_api_key(key("a", digest="other", tenant="other"))
    assert not await store.insert_api_key(key("b", digest="d-a", tenant="t-b"))
    assert not await store.insert_api_key(key("c", digest="d-c", tenant="t-a"))
    assert await store.insert_api_key(key("b", created_at=101))
    assert await store.list_api_keys() == [key("a", max_enqueued_tokens=10, weight=2.5),
                                           key("b", created_at=101)]  # fmt: skip


async def test_revoke_is_once_and_keeps_the_row(store: Store) -> None:
    await store.insert_api_key(key("a"))
    assert await store.revoke_api_key("missing", now=5) is None
    first = await store.revoke_api_key("a", now=200)
    assert first is not None and first.revoked_at == 200 and first.revoked
    again = await store.revoke_api_key("a", now=300)
    assert again is not None and again.revoked_at == 200
    assert [k.name for k in await store.list_api_keys()] == ["a"]


async def test_last_use_only_moves_forward(store: Store) -> None:
    await store.insert_api_key(key("a"))
    await store.insert_api_key(key("b"))
    await store.note_key_use({"d-a": 500, "d-b": 400, "d-unknown": 1})
    await store.note_key_use({"d-a": 450})
    used = {k.name: k.last_used_at for k in await store.list_api_keys()}
    assert used == {"a": 500, "b": 400}
    await store.note_key_use({})


async def test_usage_sums_each_tenants_batches(store: Store) -> None:
    assert await store.usage_by_tenant() == {}
    b = await started(store)
    await store.record_results([row(b.id, 1, tokens=7), row(b.id, 2, tokens=5),
                                row(b.id, 3, ok=False)])  # fmt: skip
    usage = await store.usage_by_tenant()
    assert usage == {
        "t": TenantUsage(batches=1, requests=3, completed=2, failed=1, input_tokens=12)
    }
    # One tenant's usage alone (the dashboard's question).
    assert await store.usage_by_tenant("t") == usage
    assert await store.usage_by_tenant("someone-else") == {}
