"""When to try a request again, and how long to wait first.

Exponential backoff with *equal jitter*, capped, and never shorter than what the
upstream asked for with ``Retry-After`` (so a rate-limited server is not hammered).

Equal jitter (the name is from AWS's "Exponential Backoff and Jitter") waits half
the backoff for sure and the other half at random: ``b/2 + uniform(0, b/2)`` for
``b = min(cap, base * 2**(attempt-1))``. Full jitter (``uniform(0, b)``) would
spread retries a little wider, but could send one straight back to a model server
that has just failed; the fixed half keeps a floor under every wait, which matters
here because batch retries share the server with online traffic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_RNG = random.Random()
RETRYABLE_STATUS: frozenset[int] = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    """Tries in all, the first included."""
    base: float = 0.5
    """Upper bound of the first delay, seconds (the first wait is between half and all of it)."""
    cap: float = 30.0
    """Longest delay, seconds (also caps ``Retry-After``)."""

    def should_retry_status(self, status: int, attempt: int) -> bool:
        """``attempt`` counts from 1 (the try that just failed)."""
        return status in RETRYABLE_STATUS and attempt < self.max_attempts

    def can_retry(self, attempt: int) -> bool:
        return attempt < self.max_attempts

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed try number ``attempt``: equal jitter over the backoff."""
        r = rng or _RNG
        backoff = min(self.cap, self.base * 2.0 ** (attempt - 1))
        jittered = backoff / 2 + r.uniform(0, backoff / 2)  # equal jitter: see the module doc
        if retry_after is not None:
            return max(min(retry_after, self.cap), jittered)
        return jittered
