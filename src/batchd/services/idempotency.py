"""Idempotent creates: the same ``Idempotency-Key`` with the same request answers
with the first request's object; with a different request it is a 409.

Keys live in the database (per tenant, ``idempotency_ttl`` seconds), so they hold
across restarts and across API servers. Two requests racing with one key: the
``(tenant, key)`` primary key lets one claim it; the other waits (up to
``wait_seconds``) for the winner's answer and returns it, or answers 409
``idempotency_key_in_progress`` if the winner is still running. A create that fails
releases its key, so a corrected retry may reuse it. A claim left by a process
that died mid-request is taken over after ``STALE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from batchd.clock import now
from batchd.errors import Conflict, InvalidRequest
from batchd.store.base import IdempotencyStore
from batchd.store.upload_records import IdempotencyRecord

MAX_KEY_CHARS = 255
STALE_SECONDS = 60
"""A claim with no answer after this long belongs to a request that died (a create
is one short transaction once its bytes are in)."""

Create = Callable[[], Awaitable[tuple[str, dict[str, Any]]]]
"""Runs the create; returns the new object's id and its JSON."""


def fingerprint(kind: str, request: Any) -> str:
    """A digest of the request: key order inside objects (``metadata``) does not matter.

    The standard library's encoder, not orjson: a request may carry what orjson refuses
    (integers past 64 bits, lone surrogates) and must still get its 400 from validation.
    """
    canonical = json.dumps(
        {"kind": kind, "request": request}, sort_keys=True, ensure_ascii=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class Idempotency:
    def __init__(
        self, store: IdempotencyStore, *, ttl: int, wait_seconds: float = 10.0
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.wait_seconds = wait_seconds

    async def run(
        self, tenant: str, key: str | None, *, kind: str, request: Any, create: Create
    ) -> dict[str, Any]:
        """The answer to a create: ``create()``'s, or the first one's for a repeated key."""
        if key is None:
            return (await create())[1]
        if not key or len(key) > MAX_KEY_CHARS:
            raise InvalidRequest(
                f"Idempotency keys must be 1 to {MAX_KEY_CHARS} characters.",
                param="Idempotency-Key",
                code="invalid_value",
            )
        digest = fingerprint(kind, request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        while True:
            t = now()
            rec = IdempotencyRecord(tenant, key, kind, digest, t, t + self.ttl)
            held = await self.store.claim_idempotency_key(rec, stale_before=t - STALE_SECONDS)
            if held is None:
                break
            if held.fingerprint and (held.kind != kind or held.fingerprint != digest):
                raise Conflict(
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with. Try a different key or repeat the first "
                    "request exactly.",
                    param="Idempotency-Key",
                    code="idempotency_key_reused",
                )
            if held.response is not None:
                return held.response
            if loop.time() >= deadline:
                raise Conflict(
                    "A request with this Idempotency-Key is still in progress; retry later.",
                    param="Idempotency-Key",
                    code="idempotency_key_in_progress",
                )
            await asyncio.sleep(0.05)
        try:
            object_id, answer = await create()
        except BaseException:
            await self.store.release_idempotency_key(tenant, key)
            raise
        await self.store.finish_idempotency_key(
            tenant, key, object_id=object_id, response=answer
        )
        return answer
