"""Running a batch job to the end: plan, submit, poll, download, retry, merge.

:class:`BatchRunner` is a loop over the ledger's chunks. Each pass looks up every
chunk's state in :data:`STEPS` and takes that one step (:mod:`batchd.pipeline.steps`),
which writes where the chunk now stands to the ledger before going on, so the
loop can be killed anywhere and started again: it reads where each chunk stood and
continues (see :mod:`batchd.pipeline.ledger` for how interrupted uploads and
creates are reconciled rather than repeated). When a round's chunks are all done,
its failed lines go into the next round (:mod:`batchd.pipeline.rounds`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import openai
import orjson
from rich.console import Console

from batchd.pipeline import crashpoints
from batchd.pipeline.config import RequestSpec, RunConfig
from batchd.pipeline.cost import Pricing, find_pricing
from batchd.pipeline.display import Display, make_display
from batchd.pipeline.errors import InvalidInput, LedgerMismatch
from batchd.pipeline.ledger import ChunkRow, Ledger
from batchd.pipeline.merge import write_results
from batchd.pipeline.planner import make_plan
from batchd.pipeline.remote import Remote
from batchd.pipeline.report import Progress, RunSummary, summarize
from batchd.pipeline.rounds import next_round
from batchd.pipeline.states import IN_FLIGHT, NOT_SENT, ChunkState, MetaKey
from batchd.pipeline.steps import ChunkSteps, Pass

__all__ = ["STEPS", "BatchRunner", "RunSummary", "open_client"]

Step = Callable[[ChunkSteps, ChunkRow, Pass], None]

STEPS: dict[ChunkState, Step] = {
    ChunkState.PLANNED: ChunkSteps.submit,
    ChunkState.UPLOADING: ChunkSteps.submit,
    ChunkState.UPLOADED: ChunkSteps.submit,
    ChunkState.CREATING: ChunkSteps.submit,
    ChunkState.SUBMITTED: ChunkSteps.poll,
    ChunkState.FINISHED: ChunkSteps.collect,
    ChunkState.DONE: ChunkSteps.rest,
}
"""The step each chunk state takes in one pass of the loop."""


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
                batch_file=ledger.flag("batch_file"),
            )
            summary = summarize(
                ledger,
                run_id=run_id,
                output=self.output,
                state_dir=self.state_dir,
                pricing=pricing,
                retry_length=self.config.retry_length,
                seconds=time.monotonic() - started,
            )
            (self.state_dir / "summary.json").write_text(json.dumps(summary.to_json(), indent=2))
            return summary
        finally:
            ledger.close()

    # ------------------------------------------------------------ planning

    def _prepare(self, ledger: Ledger) -> str:
        fingerprint = self.config.fingerprint(self.spec)
        known = ledger.get("fingerprint")
        if known is not None and known != fingerprint and not ledger.flag("planned"):
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
        if not ledger.flag("planned"):
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
                    "input": str(self.config.input.resolve()),
                    "output": str(self.output.resolve()),
                    "spec": orjson.dumps(self.spec.fingerprint_data()).decode(),
                },
                batch_file=plan.batch_file,
            )
            crashpoints.reach("planned")
        # Options that do not change the requests, kept for `status`/`results` of this run.
        ledger.set_flag("retry_length", self.config.retry_length)
        prices: dict[MetaKey, float | None] = {
            "price_input": self.config.price_input,
            "price_output": self.config.price_output,
        }
        for key, value in prices.items():
            ledger.set(key, "" if value is None else repr(value))
        return run_id

    # ------------------------------------------------------------ the loop

    def _loop(
        self, ledger: Ledger, remote: Remote, display: Display, pricing: Pricing | str
    ) -> None:
        steps = ChunkSteps(
            config=self.config,
            spec=self.spec,
            state_dir=self.state_dir,
            ledger=ledger,
            remote=remote,
            display=display,
        )
        progress = Progress(ledger, pricing)
        while True:
            cancelled = ledger.flag("cancelled")
            chunks = ledger.chunks(round_=ledger.current_round())
            now = Pass(cancelled=cancelled, in_flight=sum(c.state in IN_FLIGHT for c in chunks))
            for chunk in chunks:
                STEPS[chunk.state](steps, chunk, now)
            chunks = ledger.chunks(round_=ledger.current_round())
            display.update(progress.snapshot(chunks))
            waiting = [c for c in chunks if c.state is not ChunkState.DONE]
            if cancelled:
                waiting = [c for c in waiting if c.state not in NOT_SENT]
            if not waiting:
                if cancelled or not next_round(ledger, self.config, self.state_dir, display):
                    return
                continue
            self._sleep(self._pause(steps, waiting))

    def _pause(self, steps: ChunkSteps, waiting: list[ChunkRow]) -> float:
        """Until the soonest poll or retry is due (at most ``poll_max``)."""
        now_m, now_t = time.monotonic(), time.time()
        due = [
            steps.polls.due_at(c.id, now_m) - now_m
            for c in waiting
            if c.state is ChunkState.SUBMITTED
        ]
        due += [c.not_before - now_t for c in waiting if c.state is not ChunkState.SUBMITTED]
        return max(0.01, min(self.config.poll_max, *due)) if due else 0.01
