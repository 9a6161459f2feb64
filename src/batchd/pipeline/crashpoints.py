"""Named points where a test can make ``batchd run`` die as if SIGKILLed.

``BATCHD_CRASH_AT=<point>[:<n>]`` kills the process with SIGKILL the n-th time
(default first) it reaches ``<point>``. The points sit exactly where a crash is
hardest to recover from: after an API call succeeded and before the ledger
recorded it. Unset (always, outside tests), :func:`reach` does nothing.
"""

from __future__ import annotations

import os
import signal
from typing import Literal, get_args

ENV = "BATCHD_CRASH_AT"
Point = Literal["planned", "uploaded", "created", "downloaded", "round"]
POINTS: tuple[Point, ...] = get_args(Point)
_hits: dict[str, int] = {}


def reach(point: Point) -> None:
    """Die here if the environment asks for it."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
