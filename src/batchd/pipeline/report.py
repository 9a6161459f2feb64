"""What a run reports: a progress :class:`Snapshot` while it runs, a :class:`RunSummary` at the end.

Both are read from the ledger's totals, so a resumed run reports the whole run,
not just what this process did.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from batchd.pipeline.cost import CostReport, Pricing, cost_report
from batchd.pipeline.display import ChunkView, Snapshot
from batchd.pipeline.ledger import ChunkRow, Ledger
from batchd.pipeline.states import IN_BATCHES

MAX_LISTED_FAILURES = 20


@dataclass
class RunSummary:
    """How a run ended."""

    run_id: str
    output: Path
    state_dir: Path
    requests: int
    succeeded: int
    failed: int
    """Lines without a usable answer after the last round. A cut-off answer
    (``finish_reason: length``) is kept as an answer and counts as succeeded, unless
    ``retry_length`` asked for it to be redone: then one still cut off after the last
    round counts as failed."""
    rounds: int
    """Retry rounds used after the first pass."""
    cost: CostReport
    cut_off: int = 0
    """Answers cut off by the token limit (``finish_reason: length``), kept or not."""
    retry_length: bool = False
    """Cut-off answers were resubmitted (and count as failed if still cut off)."""
    failures: list[tuple[str, str]] = field(default_factory=list)
    """The first failed lines: ``(custom_id, reason)``."""
    cancelled: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.cancelled

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["output"] = str(self.output)
        data["state_dir"] = str(self.state_dir)
        data["cost"] = {
            **{k: v for k, v in asdict(self.cost).items() if k not in ("batch_usd", "sync_usd")},
            "batch_usd": None if self.cost.batch_usd is None else str(self.cost.batch_usd),
            "sync_usd": None if self.cost.sync_usd is None else str(self.cost.sync_usd),
        }
        return data


def summarize(
    ledger: Ledger,
    *,
    run_id: str,
    output: Path,
    state_dir: Path,
    pricing: Pricing | str,
    retry_length: bool,
    seconds: float,
) -> RunSummary:
    """The summary of the run as its ledger records it now."""
    totals = ledger.totals()
    succeeded = totals.ok if retry_length else totals.ok + totals.length
    return RunSummary(
        run_id=run_id,
        output=output,
        state_dir=state_dir,
        requests=totals.requests,
        succeeded=succeeded,
        failed=totals.requests - succeeded,
        cut_off=totals.length,
        retry_length=retry_length,
        rounds=ledger.current_round(),
        cost=cost_report(
            ledger.get("model"),
            pricing,
            totals.input_tokens,
            totals.output_tokens,
            totals.cached_tokens,
        ),
        failures=[
            (cid, reason or status)
            for cid, status, reason in ledger.failures(
                MAX_LISTED_FAILURES, include_length=retry_length
            )
        ],
        cancelled=ledger.flag("cancelled"),
        seconds=seconds,
    )


class Progress:
    """Turns the ledger and the chunks of this round into :class:`Snapshot` s.

    The rate counts only lines finished since this process started, so a resumed
    run's ETA is not skewed by the lines an earlier process finished.
    """

    def __init__(self, ledger: Ledger, pricing: Pricing | str) -> None:
        totals = ledger.totals()
        self._ledger = ledger
        self._pricing = pricing
        self._start_done = totals.requests - totals.pending
        self._t0 = time.monotonic()

    def snapshot(self, chunks: list[ChunkRow]) -> Snapshot:
        ledger = self._ledger
        totals = ledger.totals()
        done = totals.requests - totals.pending
        in_batches = sum(c.completed + c.failed for c in chunks if c.state in IN_BATCHES)
        progress = done + in_batches
        elapsed = max(1e-6, time.monotonic() - self._t0)
        rate = max(0, progress - self._start_done) / elapsed
        remaining = totals.requests - progress
        cost = cost_report(
            ledger.get("model"), self._pricing, totals.input_tokens, totals.output_tokens
        )
        return Snapshot(
            round=ledger.current_round(),
            chunks=[
                ChunkView(c.id, c.state, c.batch_status, c.requests, c.completed, c.failed)
                for c in chunks
            ],
            total=totals.requests,
            done=progress,
            failed=totals.failed,
            rate=rate,
            eta=remaining / rate if rate > 0 else None,
            input_tokens=totals.input_tokens,
            output_tokens=totals.output_tokens,
            cost="cost unknown" if cost.batch_usd is None else f"${cost.batch_usd:.4f}",
        )
