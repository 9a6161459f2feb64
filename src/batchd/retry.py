"""When to try a request again, and how long to wait first.

Exponential backoff with full jitter, capped, and never shorter than what the
upstream asked for with ``Retry-After`` (so a rate-limited server is not hammered).
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
    """Upper bound of the first delay, seconds."""
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
        """Seconds to wait after failed try number ``attempt``."""
        r = rng or _RNG
        backoff = min(self.cap, self.base * 2.0 ** (attempt - 1))
        jittered = backoff / 2 + r.uniform(0, backoff / 2)
        if retry_after is not None:
            return max(min(retry_after, self.cap), jittered)
        return jittered
