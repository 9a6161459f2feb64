"""The keys every process of a deployment accepts, re-read from the store.

Each API server and each worker holds a :class:`KeyDirectory`: a copy of the
``api_keys`` table refreshed every ``refresh`` seconds, so a key created or revoked
with ``batchd keys`` takes effect everywhere within that time, without a restart.
It answers, from memory: the key behind a digest (authentication), a tenant's queue
limits (its own, else the server-wide ones) and its weight (fair share). It also
remembers when keys were used and writes that back with each refresh, so a request
costs no write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import astuple, replace

from batchd.apikeys.secrets import label_of
from batchd.engine.queue_limits import QueueLimits
from batchd.store.base import KeyStore
from batchd.store.key_records import ApiKeyRecord, TenantUsage

log = logging.getLogger(__name__)


class KeyDirectory:
    def __init__(
        self, store: KeyStore, *, defaults: QueueLimits | None = None, refresh: float = 1.0
    ) -> None:
        self._store = store
        self._defaults = defaults or QueueLimits()
        self._refresh = refresh
        self._by_digest: dict[str, ApiKeyRecord] = {}
        self._by_tenant: dict[str, ApiKeyRecord] = {}
        self._used: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Read the keys now (at start, and at every refresh)."""
        keys = await self._store.list_api_keys()
        self._by_digest = {k.digest: k for k in keys}
        self._by_tenant = {k.tenant: k for k in keys}

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="api keys")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._flush_use()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self._flush_use()
                await self.load()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: keep the keys we have, try again
                log.warning("re-reading API keys failed; keeping the last ones", exc_info=True)

    async def _flush_use(self) -> None:
        used, self._used = self._used, {}
        try:
            await self._store.note_key_use(used)
        except BaseException:
            for digest, at in used.items():  # keep them for the next try
                self._used[digest] = max(at, self._used.get(digest, 0))
            raise

    # ------------------------------------------------------------- answers

    @property
    def empty(self) -> bool:
        """No key was ever created (a revoked key counts: the server stays closed)."""
        return not self._by_digest

    def lookup(self, digest: str) -> ApiKeyRecord | None:
        """The key with this digest, revoked or not."""
        return self._by_digest.get(digest)

    def note_use(self, digest: str) -> None:
        self._used[digest] = int(time.time())

    def limits_for(self, tenant: str) -> QueueLimits:
        """The tenant's queue limits: its key's own where set, else the server's."""
        key = self._by_tenant.get(tenant)
        if key is None:
            return self._defaults
        return replace(
            self._defaults,
            **{
                name: value
                for name, value in (
                    ("max_tokens", key.max_enqueued_tokens),
                    ("max_requests", key.max_enqueued_requests),
                )
                if value is not None
            },
        )

    def weight(self, tenant: str) -> float:
        key = self._by_tenant.get(tenant)
        return key.weight if key is not None else 1.0

    def name_for(self, tenant: str) -> str:
        """The key's name, or a label for a tenant with no key row (label_of)."""
        key = self._by_tenant.get(tenant)
        return key.name if key is not None else label_of(tenant)

    def key_for(self, tenant: str) -> ApiKeyRecord | None:
        return self._by_tenant.get(tenant)

    async def usage_of(self, tenant: str) -> TenantUsage:
        """One tenant's usage, read from the store now."""
        return (await self._store.usage_by_tenant(tenant)).get(tenant, TenantUsage())

    async def usage(self) -> dict[str, TenantUsage]:
        """Usage per key name (:meth:`name_for`), read from the store now."""
        by_name: dict[str, TenantUsage] = {}
        for tenant, used in (await self._store.usage_by_tenant()).items():
            name = self.name_for(tenant)
            seen = by_name.get(name)
            by_name[name] = (
                used
                if seen is None
                else TenantUsage(
                    *(a + b for a, b in zip(astuple(seen), astuple(used), strict=True))
                )
            )
        return by_name
