"""What the dashboard shows for a batch: progress, elapsed time, ETA and cost.

The numbers follow the pipeline's ``batchd run``/``status`` display
(:mod:`batchd.pipeline.runner`, :mod:`batchd.pipeline.cost`) so both say the same
thing: done = completed + failed; rate = done / seconds since work began; ETA =
(total - done) / rate; durations as ``1h02m`` or ``3m05s``; cost = (input tokens x
input price + output tokens x output price) / 1M (cached tokens billed as input),
shown as ``$0.0123``, or ``cost unknown`` when no price is configured for the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from batchd.settings import ModelPrice
from batchd.store.records import BatchRecord

MILLION = Decimal(1_000_000)
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True, slots=True)
class Progress:
    total: int
    completed: int
    failed: int
    done: int
    """completed + failed: lines with a final outcome."""
    percent: float
    elapsed_seconds: float | None
    """Since the batch went in_progress, until it ended (or now)."""
    rate: float | None
    """Lines finished per second over that time."""
    eta_seconds: float | None
    """None once finished, or while there is no rate to go by."""
    elapsed: str
    eta: str


@dataclass(frozen=True, slots=True)
class Cost:
    model: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    total_tokens: int
    usd: str | None
    """Decimal string, None when the price is unknown."""
    text: str


def duration_text(seconds: float | None) -> str:
    """``1h02m`` / ``3m05s`` (as the pipeline prints an ETA); ``?`` when unknown."""
    if seconds is None:
        return "?"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def ended_at(rec: BatchRecord) -> int | None:
    for ts in (rec.completed_at, rec.failed_at, rec.expired_at, rec.cancelled_at):
        if ts is not None:
            return ts
    return None


def progress(rec: BatchRecord, now: float) -> Progress:
    done = rec.completed + rec.failed
    finished = rec.status in TERMINAL
    if rec.total:
        percent = round(100.0 * done / rec.total, 1)
    else:
        percent = 100.0 if rec.status == "completed" else 0.0
    elapsed: float | None = None
    rate: float | None = None
    eta: float | None = None
    if rec.in_progress_at is not None:
        end = ended_at(rec)
        elapsed = max(0.0, (end if end is not None else now) - rec.in_progress_at)
        rate = done / elapsed if elapsed > 0 else None
        if not finished and rate:
            eta = max(0, rec.total - done) / rate
    return Progress(
        total=rec.total,
        completed=rec.completed,
        failed=rec.failed,
        done=done,
        percent=percent,
        elapsed_seconds=elapsed,
        rate=rate,
        eta_seconds=eta,
        elapsed=duration_text(elapsed) if elapsed is not None else "",
        eta="" if finished else duration_text(eta),
    )


def find_price(model: str | None, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """An exact model name wins; then glob patterns, in configuration order."""
    if not model:
        return None
    if model in prices:
        return prices[model]
    for pattern, price in prices.items():
        if fnmatchcase(model, pattern):
            return price
    return None


def cost(rec: BatchRecord, prices: Mapping[str, ModelPrice]) -> Cost:
    u = rec.usage
    price = find_price(rec.model, prices)
    usd: Decimal | None = None
    if price is not None:
        usd = (
            Decimal(u.input_tokens) * Decimal(str(price.input))
            + Decimal(u.output_tokens) * Decimal(str(price.output))
        ) / MILLION
    return Cost(
        model=rec.model,
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cached_tokens=u.cached_tokens,
        total_tokens=u.total_tokens,
        usd=None if usd is None else f"{usd:.6f}",
        text="cost unknown" if usd is None else f"${usd:.4f}",
    )


@dataclass(frozen=True, slots=True)
class BackendView:
    """One backend's dispatch state as this process sees it (engine/limits.py)."""

    name: str
    limit: float
    """Tries batchd may have at the backend now (capacity-seeking)."""
    ceiling: int
    in_flight: int
    server_queue: float
    """Requests waiting at the server: its own gauge, or batchd's estimate."""
    server_running: int | None
    source: str
    """``metrics`` (the server's load gauges) or ``timings`` (answers' latency)."""
    phase: str


def backend_views(snapshot: Mapping[str, Mapping[str, Any]]) -> list[BackendView]:
    return [
        BackendView(
            name=name,
            limit=float(s["limit"]),
            ceiling=int(s["ceiling"]),
            in_flight=int(s["in_flight"]),
            server_queue=float(s["server_queue"]),
            server_running=s.get("server_running"),
            source=str(s["source"]),
            phase=str(s["phase"]),
        )
        for name, s in sorted(snapshot.items())
    ]
