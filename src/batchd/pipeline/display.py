"""Showing a run's progress: a live ``rich`` table on a terminal, log lines elsewhere.

The runner hands a :class:`Snapshot` to whichever display it has; the display
decides how often to draw it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from batchd.pipeline.states import ChunkState

LOG_EVERY = 30.0
MAX_ROWS = 20


@dataclass(frozen=True, slots=True)
class ChunkView:
    id: str
    state: ChunkState
    batch_status: str | None
    requests: int
    completed: int
    failed: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    round: int
    chunks: list[ChunkView]
    total: int
    done: int
    failed: int
    rate: float
    """Requests finished per second since this process started."""
    eta: float | None
    input_tokens: int
    output_tokens: int
    cost: str


class Display(Protocol):
    def __enter__(self) -> Display: ...

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def event(self, message: str) -> None: ...

    def update(self, snapshot: Snapshot) -> None: ...


def make_display(console: Console, quiet: bool = False) -> Display:
    if quiet:
        return QuietDisplay()
    return LiveDisplay(console) if console.is_terminal else LogDisplay(console)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def _totals(s: Snapshot) -> str:
    return (
        f"round {s.round}: {s.done}/{s.total} done, {s.failed} failed, "
        f"{s.rate:.1f} req/s, ETA {_eta(s.eta)}, "
        f"{s.input_tokens:,} in / {s.output_tokens:,} out tokens, {s.cost}"
    )


class QuietDisplay:
    def __enter__(self) -> QuietDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def event(self, message: str) -> None:
        return None

    def update(self, snapshot: Snapshot) -> None:
        return None


class LogDisplay:
    """One line per event, and the totals every :data:`LOG_EVERY` seconds."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last = 0.0

    def __enter__(self) -> LogDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def event(self, message: str) -> None:
        self.console.print(f"[batchd] {message}", highlight=False, soft_wrap=True)

    def update(self, snapshot: Snapshot) -> None:
        if time.monotonic() - self._last >= LOG_EVERY:
            self._last = time.monotonic()
            self.event(_totals(snapshot))


class LiveDisplay:
    """A table of chunks with a totals line, redrawn in place."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live = Live(Text("starting…"), console=console, refresh_per_second=4)

    def __enter__(self) -> LiveDisplay:
        self._live.__enter__()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._live.__exit__(t, e, tb)

    def event(self, message: str) -> None:
        self._live.console.print(f"[dim]{message}[/dim]", highlight=False)

    def update(self, snapshot: Snapshot) -> None:
        table = Table(expand=False, box=None, pad_edge=False)
        for col in ("chunk", "state", "batch", "done", "failed", "of"):
            table.add_column(col)
        active = [c for c in snapshot.chunks if c.state is not ChunkState.DONE] or snapshot.chunks
        for c in active[:MAX_ROWS]:
            table.add_row(
                c.id,
                c.state,
                c.batch_status or "",
                str(c.completed),
                str(c.failed),
                str(c.requests),
            )
        hidden = len(active) - MAX_ROWS
        footer = Text(_totals(snapshot) + (f"  (+{hidden} chunks)" if hidden > 0 else ""))
        self._live.update(Group(table, footer))
