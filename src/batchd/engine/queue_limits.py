"""Queue limits: how much unfinished work (validating, in progress, finalizing) one
API key may hold, in input tokens and in requests.

A batch is admitted at the end of its validating pass, atomically against its key's
other unfinished batches (store ``admit_batch``); one that would pass a limit fails
with ``token_limit_exceeded``, in OpenAI's words. Limits come from a function of
the tenant, so per-key values (a later issue) plug in without touching the engine.

Tokens are counted offline (batchd/tokens.py): with tiktoken when it is installed
and its encodings are already on disk, else estimated as characters / 4.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class QueueLimits:
    max_tokens: int | None = None
    max_requests: int | None = None


LimitsFor = Callable[[str], QueueLimits]
"""The limits of one tenant (API key)."""


def fixed_limits(limits: QueueLimits) -> LimitsFor:
    """The same limits for every key (the ``BATCHD_MAX_ENQUEUED_*`` settings)."""
    return lambda _tenant: limits


def limit_error(kind: str, limit: int, model: str | None) -> dict[str, Any]:
    """The ``batch.errors`` entry of a batch refused by a queue limit (OpenAI's shape)."""
    unit = "tokens" if kind == "tokens" else "requests"
    return {
        "code": "token_limit_exceeded",
        "message": (
            f"Enqueued {unit[:-1]} limit reached for {model or 'this model'} in this API key. "
            f"Limit: {limit:,} enqueued {unit}. Please try again once some in_progress "
            "batches have been completed."
        ),
        "param": None,
        "line": None,
    }
