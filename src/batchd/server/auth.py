"""API keys and tenants.

With keys configured, every request needs ``Authorization: Bearer <key>``, and
each key is its own tenant: it sees only what it created. Keys are compared in
constant time, and only a digest of a key is ever stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request

from batchd.errors import AuthenticationFailed

OPEN_TENANT = "public"


class KeyRing:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def open(self) -> bool:
        return not self._keys

    def tenant_for(self, authorization: str | None) -> str:
        if self.open:
            return OPEN_TENANT
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                code="missing_api_key",
            )
        candidate = presented.strip().encode()
        match = False
        # Compare against every key, without stopping early, so timing says nothing.
        for key in self._keys:
            match |= hmac.compare_digest(candidate, key)
        if not match:
            raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")
        return tenant_of(presented.strip())


def tenant_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


async def request_tenant(request: Request) -> str:
    # async on purpose: FastAPI runs plain-def dependencies on a thread pool, a
    # thread hop per request (measured in bench/bench_load.py).
    ring: KeyRing = request.app.state.keyring
    return ring.tenant_for(request.headers.get("authorization"))
