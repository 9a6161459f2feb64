"""API keys and tenants.

Keys come from two places: static ones given at start (``--api-key``,
``BATCHD_API_KEYS``) and those created with ``batchd keys`` (a
:class:`~batchd.apikeys.directory.KeyDirectory`, re-read every second). With a key
from either, every request needs ``Authorization: Bearer <key>``; each key is its own
tenant and sees only what it created. Static keys are compared in constant time;
database keys are found by the digest of what was presented (only digests are stored).
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from batchd.apikeys.directory import KeyDirectory
from batchd.apikeys.secrets import digest_of
from batchd.apikeys.secrets import tenant_of as tenant_of
from batchd.errors import AuthenticationFailed

OPEN_TENANT = "public"


class KeyRing:
    def __init__(self, keys: list[str], directory: KeyDirectory | None = None) -> None:
        self._keys = [k.encode() for k in keys]
        self._directory = directory

    @property
    def open(self) -> bool:
        """No key exists anywhere: anyone may call, as the one tenant ``public``."""
        return not self._keys and (self._directory is None or self._directory.empty)

    def tenant_for(self, authorization: str | None) -> str:
        if self.open:
            return OPEN_TENANT
        scheme, _, presented = (authorization or "").partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                code="missing_api_key",
            )
        candidate = presented.encode()
        match = False
        # Compare against every static key, without stopping early, so timing says nothing.
        for key in self._keys:
            match |= hmac.compare_digest(candidate, key)
        if match:
            return tenant_of(presented)
        if self._directory is not None:
            digest = digest_of(presented)
            found = self._directory.lookup(digest)
            if found is not None and found.revoked:
                raise AuthenticationFailed(
                    f"This API key ({found.name!r}) has been revoked.", code="invalid_api_key"
                )
            if found is not None:
                self._directory.note_use(digest)
                return found.tenant
        raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")


async def request_tenant(request: Request) -> str:
    # async on purpose: FastAPI runs plain-def dependencies on a thread pool, a
    # thread hop per request (measured in bench/bench_load.py).
    ring: KeyRing = request.app.state.keyring
    return ring.tenant_for(request.headers.get("authorization"))
