"""Creating, listing and revoking keys: what ``batchd keys`` does, on any store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchd.apikeys.secrets import NAME_RE, digest_of, label_of, new_secret, tenant_of
from batchd.clock import now
from batchd.store.base import KeyStore
from batchd.store.key_records import ApiKeyRecord, TenantUsage

MAX_WEIGHT = 1000.0


class KeyAdminError(Exception):
    """A key operation that cannot be done, said for the person at the terminal."""


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """A row of ``batchd keys list``: a key (None for a tenant with no key row) and its use."""

    name: str
    key: ApiKeyRecord | None
    usage: TenantUsage

    def as_json(self) -> dict[str, Any]:
        k = self.key
        return {
            "name": self.name,
            "status": "static" if k is None else "revoked" if k.revoked else "active",
            "created_at": k.created_at if k else None,
            "revoked_at": k.revoked_at if k else None,
            "last_used_at": k.last_used_at if k else None,
            "weight": k.weight if k else 1.0,
            "max_enqueued_tokens": k.max_enqueued_tokens if k else None,
            "max_enqueued_requests": k.max_enqueued_requests if k else None,
            "batches": self.usage.batches,
            "requests": self.usage.requests,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
        }


async def create_key(
    store: KeyStore,
    name: str,
    *,
    max_enqueued_tokens: int | None = None,
    max_enqueued_requests: int | None = None,
    weight: float = 1.0,
) -> tuple[ApiKeyRecord, str]:
    """A new key and its secret (returned only here: the store keeps its digest)."""
    if not NAME_RE.fullmatch(name):
        raise KeyAdminError(
            f"Invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    if not 0 < weight <= MAX_WEIGHT:
        raise KeyAdminError(f"Invalid weight {weight}: it must be > 0 and <= {MAX_WEIGHT:g}.")
    for limit in (max_enqueued_tokens, max_enqueued_requests):
        if limit is not None and limit < 0:
            raise KeyAdminError("Queue limits must be 0 or more.")
    secret = new_secret()
    rec = ApiKeyRecord(
        name=name,
        digest=digest_of(secret),
        tenant=tenant_of(secret),
        created_at=now(),
        max_enqueued_tokens=max_enqueued_tokens,
        max_enqueued_requests=max_enqueued_requests,
        weight=weight,
    )
    if not await store.insert_api_key(rec):
        raise KeyAdminError(
            f"A key named {name!r} already exists (names are never reused, revoked "
            "keys included): pick another name."
        )
    return rec, secret


async def revoke_key(store: KeyStore, name: str) -> tuple[ApiKeyRecord, bool]:
    """Revoke the key; returns it and whether it was active until now."""
    before = {k.name: k for k in await store.list_api_keys()}.get(name)
    rec = await store.revoke_api_key(name, now=now())
    if rec is None:
        raise KeyAdminError(f"No key named {name!r} (batchd keys list shows them).")
    return rec, before is not None and not before.revoked


async def list_keys(store: KeyStore, *, static_keys: list[str] | None = None) -> list[KeyUsage]:
    """Every key with its usage, then tenants with batches but no key row (static keys,
    an open server's ``public``)."""
    keys = await store.list_api_keys()
    usage = await store.usage_by_tenant()
    rows = [KeyUsage(k.name, k, usage.get(k.tenant, TenantUsage())) for k in keys]
    known = {k.tenant for k in keys}
    others = {tenant_of(s) for s in static_keys or []} | set(usage)
    for tenant in sorted(others - known):
        rows.append(KeyUsage(label_of(tenant), None, usage.get(tenant, TenantUsage())))
    return rows
