"""What one try tells the capacity controller (engine/capacity.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_USAGE_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


def completion_tokens(body: bytes) -> int | None:
    """Output tokens from an answer's usage, without parsing the whole body."""
    m = _USAGE_TOKENS.search(body)
    return int(m.group(1)) if m else None


@dataclass(frozen=True, slots=True)
class Ticket:
    """Handed out per try; tells the controller when and under which cut it was sent."""

    sent: float
    epoch: int
    seq: int
    load: int
    """Our tries in flight once this one was sent."""


@dataclass(slots=True)
class Level:
    """What one round measured at one limit."""

    limit: float
    rate: float
    """Tokens (or requests) per second, by Little's law."""
    unit: float
    """Seconds per output token of the round's slow tail (or its first full-pipe try)."""
    latency: float = 0.0
    """Mean seconds per try in the round."""
    tokens: float = 1.0
    """Mean output tokens per try in the round (1 where answers carry no usage)."""
