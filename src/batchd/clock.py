"""Wall-clock time in the unit the API speaks (Unix seconds)."""

from __future__ import annotations

import time


def now() -> int:
    return int(time.time())
