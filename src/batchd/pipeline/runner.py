"""Running a batch job to the end: plan, submit, poll, download, retry, merge.

:class:`BatchRunner` is a loop over the ledger's chunks. Each pass moves every
chunk one step along ``planned -> ... -> done`` and writes the step to the ledger
before going on, so the loop can be killed anywhere and started again: it reads
where each chunk stood and continues (see :mod:`batchd.pipeline.ledger` for how
interrupted uploads and creates are reconciled rather than repeated).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import openai
import orjson
from openai.types import Batch
from rich.console import Console

from batchd.pipeline import crashpoints
from batchd.pipeline.answers import Outcome, read_outcome
from batchd.pipeline.config import RequestSpec, RunConfig
from batchd.pipeline.cost import CostReport, Pricing, cost_report, find_pricing
from batchd.pipeline.display import ChunkView, Display, Snapshot, make_display
from batchd.pipeline.errors import InvalidInput, LedgerMismatch
from batchd.pipeline.ledger import ChunkRow, Ledger
from batchd.pipeline.merge import write_results
from batchd.pipeline.planner import ChunkWriter, make_plan
from batchd.pipeline.remote import TERMINAL, TRANSIENT, Remote

TOKEN_LIMIT = "token_limit_exceeded"
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


def open_client(
    config: RunConfig, state_dir: Path, stack: contextlib.ExitStack
) -> tuple[openai.OpenAI, str]:
    """An SDK client for ``--base-url``/the key, or for an in-process batchd server.

    The in-process server keeps its data in the state dir, so its batches survive a
    restart of ``batchd run`` like a remote server's would.
    """
    base_url = config.base_url or os.environ.get("OPENAI_BASE_URL")
    api_key = config.api_key or os.environ.get("OPENAI_API_KEY")
    if not base_url and not api_key:  # unset or empty (OPENAI_API_KEY= counts as unset)
        from batchd.embedded import EmbeddedServer
        from batchd.settings import load_settings

        settings = load_settings(None, data_dir=state_dir / "server", poll_interval=0.2)
        server = stack.enter_context(EmbeddedServer(settings))
        base_url, api_key = server.base_url, server.api_key
    client = openai.OpenAI(base_url=base_url or None, api_key=api_key or "batchd", max_retries=5)
    stack.callback(client.close)
    return client, str(client.base_url)


class BatchRunner:
    """Runs one job described by a :class:`RunConfig` and a :class:`RequestSpec`.

    >>> runner = BatchRunner(RunConfig(input=Path("rows.csv")), RequestSpec(model="gpt-4o-mini",
    ...     template="Classify: {text}"))  # doctest: +SKIP
    >>> summary = runner.run()  # doctest: +SKIP
    """

    def __init__(
        self,
        config: RunConfig,
        spec: RequestSpec,
        *,
        client: openai.OpenAI | None = None,
        console: Console | None = None,
        quiet: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        remote: Callable[[openai.OpenAI, str], Remote] = Remote,
    ) -> None:
        self.config = config
        self.spec = spec
        self.state_dir = config.resolved_state_dir()
        self.output = config.resolved_output()
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self._client = client
        self._sleep = sleep
        self._make_remote = remote
        self._next_poll: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._seen_counts: dict[str, tuple[int, int]] = {}

    # ------------------------------------------------------------ public

    def run(self) -> RunSummary:
        """Run (or resume) the job to the end and write the merged output."""
        started = time.monotonic()
        ledger = Ledger(self.state_dir)
        try:
            run_id = self._prepare(ledger)
            with contextlib.ExitStack() as stack:
                if self._client is not None:
                    client, base_url = self._client, str(self._client.base_url)
                else:
                    client, base_url = open_client(self.config, self.state_dir, stack)
                remote = self._make_remote(client, run_id)
                pricing = find_pricing(
                    ledger.get("model"),
                    price_input=self.config.price_input,
                    price_output=self.config.price_output,
                    base_url=base_url,
                )
                display = make_display(self.console, self.quiet)
                with display:
                    display.event(f"run {run_id}: state in {self.state_dir}, API at {base_url}")
                    self._loop(ledger, remote, display, pricing)
            write_results(
                ledger,
                self.config.input,
                self.spec,
                self.output,
                batch_file=ledger.get("batch_file") == "1",
            )
            summary = self._summary(ledger, run_id, pricing, time.monotonic() - started)
            (self.state_dir / "summary.json").write_text(json.dumps(summary.to_json(), indent=2))
            return summary
        finally:
            ledger.close()

    # ------------------------------------------------------------ planning

    def _prepare(self, ledger: Ledger) -> str:
        fingerprint = self.config.fingerprint(self.spec)
        known = ledger.get("fingerprint")
        if known is not None and known != fingerprint and ledger.get("planned") != "1":
            # A plan that never completed (invalid input, a crash while planning) uploaded
            # nothing: the corrected command starts over instead of being refused.
            ledger.set("fingerprint", fingerprint)
            known = fingerprint
        if known is not None and known != fingerprint:
            raise LedgerMismatch(
                f"{self.state_dir} holds a run with other inputs or options; "
                "use another --state-dir (or --output), or delete it to start over"
            )
        run_id = ledger.get("run_id")
        if run_id is None:
            run_id = uuid.uuid4().hex[:12]
            ledger.set("run_id", run_id)
            ledger.set("fingerprint", fingerprint)
        if ledger.get("planned") != "1":
            # A plan cut short by a crash is redone from scratch: nothing was uploaded yet.
            ledger.reset_plan()
            chunk_dir = self.state_dir / "chunks"
            shutil.rmtree(chunk_dir, ignore_errors=True)
            plan = make_plan(self.config, self.spec, chunk_dir=chunk_dir, ledger=ledger)
            if not plan.report.ok:
                ledger.reset_plan()
                shutil.rmtree(chunk_dir, ignore_errors=True)
                raise InvalidInput(plan.report)
            ledger.commit_plan(
                [(c.id, chunk_dir / f"{c.id}.jsonl", c.requests, c.bytes) for c in plan.chunks],
                {
                    "endpoint": plan.endpoint,
                    "model": plan.model or "",
                    "batch_file": "1" if plan.batch_file else "0",
                    "input": str(self.config.input.resolve()),
                    "output": str(self.output.resolve()),
                    "spec": orjson.dumps(self.spec.fingerprint_data()).decode(),
                },
            )
            crashpoints.reach("planned")
        # Options that do not change the requests, kept for `status`/`results` of this run.
        ledger.set("retry_length", "1" if self.config.retry_length else "0")
        for key in ("price_input", "price_output"):
            value = getattr(self.config, key)
            ledger.set(key, "" if value is None else repr(value))
        return run_id

    # ------------------------------------------------------------ the loop

    def _loop(
        self, ledger: Ledger, remote: Remote, display: Display, pricing: Pricing | str
    ) -> None:
        start_done = ledger.totals().requests - ledger.totals().pending
        t0 = time.monotonic()
        while True:
            cancelled = ledger.get("cancelled") == "1"
            chunks = ledger.chunks(round_=ledger.current_round())
            in_flight = sum(c.state in ("creating", "submitted") for c in chunks)
            for chunk in chunks:
                if chunk.state in ("planned", "uploading", "uploaded", "creating"):
                    if cancelled or time.time() < chunk.not_before:
                        continue
                    if chunk.state != "creating" and in_flight >= self.config.max_in_flight:
                        continue
                    self._submit(ledger, remote, chunk, display)
                    in_flight += chunk.state != "creating"
                elif chunk.state == "submitted":
                    self._poll(ledger, remote, chunk, display)
                elif chunk.state == "finished":
                    self._collect(ledger, remote, chunk, display)
            chunks = ledger.chunks(round_=ledger.current_round())
            self._show(ledger, display, chunks, pricing, start_done, t0)
            waiting = [c for c in chunks if c.state != "done"]
            if cancelled:
                waiting = [
                    c for c in waiting if c.state not in ("planned", "uploading", "uploaded")
                ]
            if not waiting:
                if cancelled or not self._next_round(ledger, display):
                    return
                continue
            self._sleep(self._pause(waiting))

    def _pause(self, waiting: list[ChunkRow]) -> float:
        now_m, now_t = time.monotonic(), time.time()
        due = [self._next_poll.get(c.id, now_m) - now_m for c in waiting if c.state == "submitted"]
        due += [c.not_before - now_t for c in waiting if c.state != "submitted"]
        return max(0.01, min(self.config.poll_max, *due)) if due else 0.01

    # ------------------------------------------------------------ submit

    def _submit(self, ledger: Ledger, remote: Remote, chunk: ChunkRow, display: Display) -> None:
        try:
            if chunk.state in ("planned", "uploading"):
                self._upload(ledger, remote, chunk)
                chunk = ledger.chunk(chunk.id)
            self._create(ledger, remote, chunk, display)
        except openai.BadRequestError as exc:
            # The server refuses this chunk outright: its lines fail with the reason.
            ledger.update_chunk(
                chunk.id, state="finished", batch_status="failed", note=_message(exc)
            )
            display.event(f"{chunk.id}: refused ({_message(exc)})")
        except openai.RateLimitError as exc:
            ledger.update_chunk(chunk.id, not_before=time.time() + self.config.token_limit_wait)
            display.event(f"{chunk.id}: rate limited, retrying later ({_message(exc)})")
        except TRANSIENT as exc:
            ledger.update_chunk(chunk.id, not_before=time.time() + self.config.poll_interval)
            display.event(f"{chunk.id}: {type(exc).__name__}, will retry")

    def _upload(self, ledger: Ledger, remote: Remote, chunk: ChunkRow) -> None:
        if chunk.state == "uploading" and chunk.intent_at is not None:
            found = remote.find_upload(chunk.id, chunk.bytes, chunk.intent_at)
            if found is not None:
                ledger.update_chunk(chunk.id, state="uploaded", file_id=found)
                return
        ledger.update_chunk(chunk.id, state="uploading", intent_at=time.time())
        file_id = remote.upload(Path(chunk.path), chunk.id)
        crashpoints.reach("uploaded")
        ledger.update_chunk(chunk.id, state="uploaded", file_id=file_id)

    def _create(self, ledger: Ledger, remote: Remote, chunk: ChunkRow, display: Display) -> None:
        assert chunk.file_id is not None
        batch: Batch | None = None
        if chunk.state == "creating" and chunk.intent_at is not None:
            batch = remote.find_batch(chunk.id, chunk.attempt, chunk.intent_at)
        if batch is None:
            ledger.update_chunk(chunk.id, state="creating", intent_at=time.time())
            batch = remote.create(
                chunk.file_id,
                endpoint=ledger.get("endpoint") or "",
                chunk_id=chunk.id,
                attempt=chunk.attempt,
                window=self.config.completion_window,
            )
            crashpoints.reach("created")
        ledger.update_chunk(
            chunk.id, state="submitted", batch_id=batch.id, batch_status=batch.status
        )
        self._delay[chunk.id] = self.config.poll_interval
        self._next_poll[chunk.id] = time.monotonic() + self.config.poll_interval
        display.event(f"{chunk.id}: {chunk.requests} requests submitted as {batch.id}")

    # ------------------------------------------------------------ poll

    def _poll(self, ledger: Ledger, remote: Remote, chunk: ChunkRow, display: Display) -> None:
        if time.monotonic() < self._next_poll.get(chunk.id, 0.0):
            return
        assert chunk.batch_id is not None
        try:
            batch = remote.retrieve(chunk.batch_id)
        except TRANSIENT as exc:
            display.event(f"{chunk.id}: poll failed ({type(exc).__name__}), backing off")
            self._backoff(chunk.id, changed=False)
            return
        counts = batch.request_counts
        done = (counts.completed, counts.failed) if counts else (0, 0)
        self._backoff(chunk.id, changed=done != self._seen_counts.get(chunk.id))
        self._seen_counts[chunk.id] = done
        if batch.status not in TERMINAL:
            ledger.update_chunk(
                chunk.id, batch_status=batch.status, completed=done[0], failed=done[1]
            )
            return
        errors = batch.errors.data if batch.errors and batch.errors.data else []
        if batch.status == "failed" and any(e.code == TOKEN_LIMIT for e in errors):
            # The provider's enqueued-token quota is full: the same file goes again later.
            ledger.update_chunk(
                chunk.id,
                state="uploaded",
                batch_id=None,
                batch_status=None,
                attempt=chunk.attempt + 1,
                not_before=time.time() + self.config.token_limit_wait,
            )
            display.event(
                f"{chunk.id}: {TOKEN_LIMIT}; resubmitting in {self.config.token_limit_wait:.0f}s"
            )
            return
        note = "; ".join(f"{e.code}: {e.message}" for e in errors[:3]) or None
        ledger.update_chunk(
            chunk.id,
            state="finished",
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

    def _backoff(self, chunk_id: str, *, changed: bool) -> None:
        start, cap = self.config.poll_interval, self.config.poll_max
        delay = start if changed else min(cap, self._delay.get(chunk_id, start) * 2)
        self._delay[chunk_id] = delay
        self._next_poll[chunk_id] = time.monotonic() + delay

    # ------------------------------------------------------------ collect

    def _collect(self, ledger: Ledger, remote: Remote, chunk: ChunkRow, display: Display) -> None:
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
                    remote.download(file_id, dest)
                    crashpoints.reach("downloaded")
                files.append(dest)
        except TRANSIENT as exc:
            display.event(f"{chunk.id}: download failed ({type(exc).__name__}); will retry")
            return
        reason = f"batch_{chunk.batch_status}: no result was returned for this line"
        if chunk.note:
            reason += f" ({chunk.note})"
        schema = self.spec.schema if ledger.get("batch_file") != "1" else None
        endpoint = ledger.get("endpoint") or ""
        ledger.finish_chunk(chunk.id, _outcomes(files, endpoint, schema), reason)
        for path in files:
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------ retries

    def _retry_statuses(self) -> tuple[str, ...]:
        return ("failed", "length") if self.config.retry_length else ("failed",)

    def _next_round(self, ledger: Ledger, display: Display) -> bool:
        """Put this round's failed lines into new chunks; False when there is nothing to retry."""
        round_ = ledger.current_round()
        if round_ >= self.config.max_retry_rounds:
            return False
        nxt = round_ + 1
        chunk_dir = self.state_dir / "chunks"
        writer = ChunkWriter(
            chunk_dir, nxt, self.config.max_requests_per_batch, self.config.max_bytes_per_batch
        )
        members: dict[str, str] = {}
        with _SourceLines(ledger) as sources:
            for entry in ledger.retryable(self._retry_statuses()):
                placed = writer.add(
                    entry.custom_id,
                    sources.read(entry.src_chunk, entry.src_offset, entry.src_length),
                )
                members[entry.custom_id] = placed.src_chunk
        chunks = writer.close()
        if not chunks:
            return False
        crashpoints.reach("round")
        ledger.start_round(
            nxt, [(c.id, chunk_dir / f"{c.id}.jsonl", c.requests, c.bytes) for c in chunks], members
        )
        display.event(f"retry round {nxt}: {len(members)} lines in {len(chunks)} batch(es)")
        return True

    # ------------------------------------------------------------ report

    def _show(
        self,
        ledger: Ledger,
        display: Display,
        chunks: list[ChunkRow],
        pricing: Pricing | str,
        start_done: int,
        t0: float,
    ) -> None:
        totals = ledger.totals()
        done = totals.requests - totals.pending
        in_batches = sum(
            c.completed + c.failed for c in chunks if c.state in ("submitted", "finished")
        )
        progress = done + in_batches
        elapsed = max(1e-6, time.monotonic() - t0)
        rate = max(0, progress - start_done) / elapsed
        remaining = totals.requests - progress
        cost = cost_report(ledger.get("model"), pricing, totals.input_tokens, totals.output_tokens)
        display.update(
            Snapshot(
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
        )

    def _summary(
        self, ledger: Ledger, run_id: str, pricing: Pricing | str, seconds: float
    ) -> RunSummary:
        totals = ledger.totals()
        succeeded = totals.ok if self.config.retry_length else totals.ok + totals.length
        return RunSummary(
            run_id=run_id,
            output=self.output,
            state_dir=self.state_dir,
            requests=totals.requests,
            succeeded=succeeded,
            failed=totals.requests - succeeded,
            cut_off=totals.length,
            retry_length=self.config.retry_length,
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
                    MAX_LISTED_FAILURES, include_length=self.config.retry_length
                )
            ],
            cancelled=ledger.get("cancelled") == "1",
            seconds=seconds,
        )


class _SourceLines:
    """Reads original request lines back from the first-round chunk files."""

    def __init__(self, ledger: Ledger) -> None:
        self._paths = {c.id: Path(c.path) for c in ledger.chunks(round_=0)}
        self._open: dict[str, IO[bytes]] = {}

    def __enter__(self) -> _SourceLines:
        return self

    def __exit__(self, *exc: object) -> None:
        for fh in self._open.values():
            fh.close()

    def read(self, chunk_id: str, offset: int, length: int) -> bytes:
        fh = self._open.get(chunk_id)
        if fh is None:
            fh = self._open[chunk_id] = self._paths[chunk_id].open("rb")
        fh.seek(offset)
        return fh.read(length)


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
