"""Standard Webhooks signatures (https://www.standardwebhooks.com).

The secret is ``whsec_`` followed by base64 key bytes. Each delivery carries
``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature:
v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``. Receivers can verify with
any Standard Webhooks library, or with :meth:`WebhookSigner.verify`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300


class InvalidSignature(ValueError):
    """A delivery whose signature or timestamp does not check out."""


class WebhookSigner:
    def __init__(self, secret: str) -> None:
        raw = secret.removeprefix(PREFIX)
        try:
            self._key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                "the webhook secret must be 'whsec_' followed by base64 "
                "(e.g. whsec_$(head -c 32 /dev/urandom | base64))"
            ) from None
        if not self._key:
            raise ValueError("the webhook secret is empty")

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` header value."""
        signed = f"{msg_id}.{timestamp}.".encode() + body
        digest = hmac.new(self._key, signed, hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode()

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.signature(msg_id, timestamp, body),
        }

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        tolerance: int = DEFAULT_TOLERANCE,
        now: float | None = None,
    ) -> None:
        """Raise :class:`InvalidSignature` unless ``headers`` sign ``body`` and are fresh.

        ``headers`` keys must be lower case (as HTTP/2 and most frameworks give them).
        """
        msg_id = headers.get("webhook-id")
        stamp = headers.get("webhook-timestamp")
        presented = headers.get("webhook-signature")
        if not msg_id or not stamp or not presented:
            raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
        try:
            timestamp = int(stamp)
        except ValueError:
            raise InvalidSignature("webhook-timestamp is not an integer") from None
        if abs((time.time() if now is None else now) - timestamp) > tolerance:
            raise InvalidSignature("webhook-timestamp is outside the tolerance")
        expected = self.signature(msg_id, timestamp, body).encode()
        # The header may list several space-separated signatures (key rotation).
        if not any(hmac.compare_digest(expected, sig.encode()) for sig in presented.split()):
            raise InvalidSignature("no signature matches")
