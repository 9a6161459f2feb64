"""One step of one chunk: submit (upload, create), poll, or collect.

Each step reads the chunk's :class:`~batchd.pipeline.states.ChunkState`, makes at
most the API calls that state calls for, and writes the next state to the ledger
before returning. An *intent* (``uploading``, ``creating``) is written before its
call, so a step cut short by a crash is reconciled against the server on restart
(:meth:`Remote.find_upload`, :meth:`Remote.find_batch`) rather than repeated.
A transient API failure leaves the chunk where it was, to be stepped again later.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import orjson
from openai.types import Batch

from batchd.pipeline import crashpoints
from batchd.pipeline.answers import Outcome, read_outcome
from batchd.pipeline.config import RequestSpec, RunConfig
from batchd.pipeline.display import Display
from batchd.pipeline.ledger import ChunkRow, Ledger
from batchd.pipeline.remote import REFUSED, TERMINAL, TRANSIENT, Remote
from batchd.pipeline.states import ChunkState

TOKEN_LIMIT = "token_limit_exceeded"


@dataclass
class Pass:
    """What one pass of the loop over a round's chunks knows."""

    cancelled: bool
    """``batchd cancel`` stopped the run: nothing new is submitted."""
    in_flight: int
    """Batches running (or being created), counted against ``max_in_flight``."""


class PollSchedule:
    """When each running batch is polled next: soon after it changed, less often while not.

    Kept in memory only: a resumed run polls every batch at once, then backs off again.
    """

    def __init__(self, start: float, cap: float) -> None:
        self._start, self._cap = start, cap
        self._next: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._seen: dict[str, tuple[int, int]] = {}

    def due_at(self, chunk_id: str, default: float) -> float:
        """The ``time.monotonic()`` of the chunk's next poll (``default`` if none is set)."""
        return self._next.get(chunk_id, default)

    def begin(self, chunk_id: str) -> None:
        self._delay[chunk_id] = self._start
        self._next[chunk_id] = time.monotonic() + self._start

    def observe(self, chunk_id: str, counts: tuple[int, int] | None) -> None:
        """Schedule the next poll after one (``counts``: completed and failed; ``None``: failed)."""
        changed = counts is not None and counts != self._seen.get(chunk_id)
        if counts is not None:
            self._seen[chunk_id] = counts
        delay = (
            self._start
            if changed
            else min(self._cap, self._delay.get(chunk_id, self._start) * 2)
        )
        self._delay[chunk_id] = delay
        self._next[chunk_id] = time.monotonic() + delay


class ChunkSteps:
    """The steps of one run, over its ledger and its remote API."""

    def __init__(
        self,
        *,
        config: RunConfig,
        spec: RequestSpec,
        state_dir: Path,
        ledger: Ledger,
        remote: Remote,
        display: Display,
    ) -> None:
        self.config = config
        self.spec = spec
        self.state_dir = state_dir
        self.ledger = ledger
        self.remote = remote
        self.display = display
        self.polls = PollSchedule(config.poll_interval, config.poll_max)

    # ------------------------------------------------------------ submit

    def submit(self, chunk: ChunkRow, now: Pass) -> None:
        """``planned``/``uploading``/``uploaded``/``creating`` -> ``submitted``, within limits."""
        if now.cancelled or time.time() < chunk.not_before:
            return
        resuming = chunk.state is ChunkState.CREATING  # already counted as in flight
        if not resuming and now.in_flight >= self.config.max_in_flight:
            return
        now.in_flight += not resuming
        ledger, display = self.ledger, self.display
        try:
            if chunk.state in (ChunkState.PLANNED, ChunkState.UPLOADING):
                self._upload(chunk)
                chunk = ledger.chunk(chunk.id)
            self._create(chunk)
        except openai.BadRequestError as exc:
            # The server refuses this chunk outright: its lines fail with the reason.
            ledger.update_chunk(
                chunk.id, state=ChunkState.FINISHED, batch_status=REFUSED, note=_message(exc)
            )
            display.event(f"{chunk.id}: refused ({_message(exc)})")
        except openai.RateLimitError as exc:
            ledger.update_chunk(chunk.id, not_before=time.time() + self.config.token_limit_wait)
            display.event(f"{chunk.id}: rate limited, retrying later ({_message(exc)})")
        except TRANSIENT as exc:
            ledger.update_chunk(chunk.id, not_before=time.time() + self.config.poll_interval)
            display.event(f"{chunk.id}: {type(exc).__name__}, will retry")

    def _upload(self, chunk: ChunkRow) -> None:
        if chunk.state is ChunkState.UPLOADING and chunk.intent_at is not None:
            found = self.remote.find_upload(chunk.id, chunk.bytes, chunk.intent_at)
            if found is not None:
                self.ledger.update_chunk(chunk.id, state=ChunkState.UPLOADED, file_id=found)
                return
        self.ledger.update_chunk(chunk.id, state=ChunkState.UPLOADING, intent_at=time.time())
        file_id = self.remote.upload(Path(chunk.path), chunk.id)
        crashpoints.reach("uploaded")
        self.ledger.update_chunk(chunk.id, state=ChunkState.UPLOADED, file_id=file_id)

    def _create(self, chunk: ChunkRow) -> None:
        assert chunk.file_id is not None
        batch: Batch | None = None
        if chunk.state is ChunkState.CREATING and chunk.intent_at is not None:
            batch = self.remote.find_batch(chunk.id, chunk.attempt, chunk.intent_at)
        if batch is None:
            self.ledger.update_chunk(chunk.id, state=ChunkState.CREATING, intent_at=time.time())
            batch = self.remote.create(
                chunk.file_id,
                endpoint=self.ledger.get("endpoint") or "",
                chunk_id=chunk.id,
                attempt=chunk.attempt,
                window=self.config.completion_window,
            )
            crashpoints.reach("created")
        self.ledger.update_chunk(
            chunk.id, state=ChunkState.SUBMITTED, batch_id=batch.id, batch_status=batch.status
        )
        self.polls.begin(chunk.id)
        self.display.event(f"{chunk.id}: {chunk.requests} requests submitted as {batch.id}")

    # ------------------------------------------------------------ poll

    def poll(self, chunk: ChunkRow, _now: Pass) -> None:
        """``submitted`` -> ``finished`` once the batch ends (or back to ``uploaded``)."""
        if time.monotonic() < self.polls.due_at(chunk.id, 0.0):
            return
        assert chunk.batch_id is not None
        ledger, display = self.ledger, self.display
        try:
            batch = self.remote.retrieve(chunk.batch_id)
        except TRANSIENT as exc:
            display.event(f"{chunk.id}: poll failed ({type(exc).__name__}), backing off")
            self.polls.observe(chunk.id, None)
            return
        counts = batch.request_counts
        done = (counts.completed, counts.failed) if counts else (0, 0)
        self.polls.observe(chunk.id, done)
        if batch.status not in TERMINAL:
            ledger.update_chunk(
                chunk.id, batch_status=batch.status, completed=done[0], failed=done[1]
            )
            return
        errors = batch.errors.data if batch.errors and batch.errors.data else []
        if batch.status == "failed" and any(e.code == TOKEN_LIMIT for e in errors):
            # The provider's enqueued-token quota is full: the same file goes again later.
            wait = self.config.token_limit_wait
            ledger.update_chunk(
                chunk.id,
                state=ChunkState.UPLOADED,
                batch_id=None,
                batch_status=None,
                attempt=chunk.attempt + 1,
                not_before=time.time() + wait,
            )
            display.event(f"{chunk.id}: {TOKEN_LIMIT}; resubmitting in {wait:.0f}s")
            return
        note = "; ".join(f"{e.code}: {e.message}" for e in errors[:3]) or None
        ledger.update_chunk(
            chunk.id,
            state=ChunkState.FINISHED,
            batch_status=batch.status,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            completed=done[0],
            failed=done[1],
            note=note,
        )
        display.event(
            f"{chunk.id}: batch {batch.id} {batch.status} ({done[0]} ok, {done[1]} failed)"
        )

    # ------------------------------------------------------------ collect

    def collect(self, chunk: ChunkRow, _now: Pass) -> None:
        """``finished`` -> ``done``: download its files and record every line's outcome."""
        results = self.state_dir / "results"
        results.mkdir(exist_ok=True)
        files: list[Path] = []
        try:
            for kind, file_id in (
                ("output", chunk.output_file_id),
                ("errors", chunk.error_file_id),
            ):
                if file_id is None:
                    continue
                dest = results / f"{chunk.id}.{kind}.jsonl"
                if not dest.exists():  # downloaded before a restart: never fetched twice
                    self.remote.download(file_id, dest)
                    crashpoints.reach("downloaded")
                files.append(dest)
        except TRANSIENT as exc:
            self.display.event(
                f"{chunk.id}: download failed ({type(exc).__name__}); will retry"
            )
            return
        reason = f"batch_{chunk.batch_status}: no result was returned for this line"
        if chunk.note:
            reason += f" ({chunk.note})"
        schema = None if self.ledger.flag("batch_file") else self.spec.schema
        endpoint = self.ledger.get("endpoint") or ""
        self.ledger.finish_chunk(chunk.id, _outcomes(files, endpoint, schema), reason)
        for path in files:
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------ done

    def rest(self, _chunk: ChunkRow, _now: Pass) -> None:
        """``done``: nothing left to do."""


def _outcomes(files: list[Path], endpoint: str, schema: Any) -> Iterator[tuple[Outcome, bytes]]:
    for path in files:
        with path.open("rb") as fh:
            for raw in fh:
                raw = raw.strip()
                if not raw:
                    continue
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                outcome = read_outcome(line, endpoint, schema) if isinstance(line, dict) else None
                if outcome is not None:
                    yield outcome, raw


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(exc)
