"""The pipeline as Python functions: the same operations as the CLI, typed.

::

    from batchd import run_batch, validate_file, estimate
    summary = run_batch("reviews.csv", model="gpt-4o-mini", template="Classify: {text}")
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import openai
import orjson
from pydantic import BaseModel

from batchd.pipeline.config import RequestSpec, RunConfig
from batchd.pipeline.cost import CostReport, cost_report, find_pricing
from batchd.pipeline.errors import PipelineError
from batchd.pipeline.ledger import Ledger, Totals
from batchd.pipeline.merge import write_results
from batchd.pipeline.planner import ChunkPlan, make_plan
from batchd.pipeline.runner import BatchRunner, RunSummary, open_client
from batchd.pipeline.states import ChunkState
from batchd.pipeline.structured import SchemaSpec, schema_from_file, schema_from_model
from batchd.pipeline.tokens import TokenCounter
from batchd.validation import ValidationReport


def make_spec(
    *,
    model: str | None = None,
    endpoint: str | None = None,
    template: str | None = None,
    input_column: str | None = None,
    system: str | None = None,
    id_column: str | None = None,
    params: dict[str, Any] | None = None,
    json_schema: Path | dict[str, Any] | type[BaseModel] | SchemaSpec | None = None,
) -> RequestSpec:
    """A :class:`RequestSpec`; ``json_schema`` may be a file, a schema dict or a pydantic model.

    A ``template`` naming an existing file is read from that file.
    """
    if template is not None and len(template) < 4096 and Path(template).is_file():
        template = Path(template).read_text(encoding="utf-8")
    schema: SchemaSpec | None
    if json_schema is None or isinstance(json_schema, SchemaSpec):
        schema = json_schema
    elif isinstance(json_schema, Path):
        schema = schema_from_file(json_schema)
    elif isinstance(json_schema, dict):
        schema = SchemaSpec(name="answer", schema=json_schema)
    else:
        schema = schema_from_model(json_schema)
    return RequestSpec(
        model=model,
        endpoint=endpoint,
        template=template,
        input_column=input_column,
        system=system,
        id_column=id_column,
        params=dict(params or {}),
        schema=schema,
    )


def run_batch(
    input: str | Path,
    *,
    model: str | None = None,
    client: openai.OpenAI | None = None,
    quiet: bool = True,
    spec: RequestSpec | None = None,
    **options: Any,
) -> RunSummary:
    """Run (or resume) a whole job and return its summary.

    ``options`` are the fields of :func:`make_spec` (``template``, ``json_schema``,
    ``params``...) and of :class:`RunConfig` (``output``, ``base_url``,
    ``max_requests_per_batch``...). ``client`` replaces the connection options.
    """
    spec_fields = {
        "endpoint",
        "template",
        "input_column",
        "system",
        "id_column",
        "params",
        "json_schema",
    }
    spec_args = {k: options.pop(k) for k in list(options) if k in spec_fields}
    spec = spec or make_spec(model=model, **spec_args)
    config = RunConfig(input=Path(input), **options)
    return BatchRunner(config, spec, client=client, quiet=quiet).run()


def validate_file(
    input: str | Path, *, spec: RequestSpec | None = None, max_bytes_per_batch: int | None = None
) -> ValidationReport:
    """Check every line with the server's rules (nothing is written or uploaded).

    A ready batch JSONL needs no ``spec``; rows need one to become request lines.
    """
    config = RunConfig(input=Path(input))
    if max_bytes_per_batch is not None:
        config = RunConfig(input=Path(input), max_bytes_per_batch=max_bytes_per_batch)
    return make_plan(config, spec or RequestSpec()).report


@dataclass
class Estimate:
    """What ``--dry-run`` reports: the chunk plan, tokens and what they would cost."""

    report: ValidationReport
    endpoint: str
    model: str | None
    chunks: list[ChunkPlan]
    input_tokens: int
    max_output_tokens: int | None
    """Upper bound from every line's token limit; ``None`` when a line sets none."""
    token_method: str
    input_cost: CostReport
    """The prompt tokens priced (output tokens not included)."""
    max_cost: CostReport | None = None
    """Prompt tokens plus the output upper bound, when known."""
    notes: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self.chunks)


def estimate(config: RunConfig, spec: RequestSpec) -> Estimate:
    """Plan the run without writing anything and price its tokens."""
    plan = make_plan(config, spec, counter=TokenCounter(spec.model))
    pricing = find_pricing(
        plan.model,
        price_input=config.price_input,
        price_output=config.price_output,
        base_url=config.base_url,
    )
    input_cost = cost_report(plan.model, pricing, plan.input_tokens, 0)
    max_cost = None
    if plan.max_output_tokens is not None:
        max_cost = cost_report(plan.model, pricing, plan.input_tokens, plan.max_output_tokens)
    return Estimate(
        report=plan.report,
        endpoint=plan.endpoint,
        model=plan.model,
        chunks=plan.chunks,
        input_tokens=plan.input_tokens,
        max_output_tokens=plan.max_output_tokens,
        token_method=plan.token_method or "",
        input_cost=input_cost,
        max_cost=max_cost,
    )


# ------------------------------------------------------------------ a run's state


@dataclass
class ChunkStatus:
    id: str
    state: ChunkState
    batch_id: str | None
    batch_status: str | None
    requests: int
    completed: int
    failed: int


@dataclass
class RunStatus:
    """A run as its ledger records it (refreshed from the server when asked)."""

    run_id: str | None
    state_dir: Path
    round: int
    totals: Totals
    chunks: list[ChunkStatus]
    cancelled: bool
    finished: bool
    cost: CostReport
    """The tokens recorded so far, priced like the run prices them."""
    retry_length: bool = False
    """The run resubmits cut-off answers (else they count as answers)."""


def _price(ledger: Ledger, key: Literal["price_input", "price_output"]) -> float | None:
    value = ledger.get(key)
    return float(value) if value else None


def find_state_dir(target: Path) -> Path:
    """The state dir itself, or the one next to an output file (``OUT.batchd``)."""
    if Ledger.exists(target):
        return target
    beside = target.with_name(target.name + ".batchd")
    if Ledger.exists(beside):
        return beside
    raise PipelineError(f"no batchd run found at {target} (nor at {beside})")


def run_status(target: Path, *, client: openai.OpenAI | None = None) -> RunStatus:
    """The run's progress; with ``client``, in-flight batches are re-read from the server."""
    state_dir = find_state_dir(target)
    ledger = Ledger(state_dir)
    try:
        round_ = ledger.current_round()
        chunks = []
        for c in ledger.chunks():
            status, completed, failed = c.batch_status, c.completed, c.failed
            if client is not None and c.batch_id and c.state is ChunkState.SUBMITTED:
                batch = client.batches.retrieve(c.batch_id)
                status = batch.status
                if batch.request_counts:
                    completed, failed = batch.request_counts.completed, batch.request_counts.failed
            chunks.append(
                ChunkStatus(c.id, c.state, c.batch_id, status, c.requests, completed, failed)
            )
        last = [c for c in chunks if c.id.startswith(f"r{round_}-")]
        totals = ledger.totals()
        model = ledger.get("model")
        pricing = find_pricing(
            model,
            price_input=_price(ledger, "price_input"),
            price_output=_price(ledger, "price_output"),
            base_url=None,
        )
        return RunStatus(
            run_id=ledger.get("run_id"),
            state_dir=state_dir,
            round=round_,
            totals=totals,
            chunks=chunks,
            cancelled=ledger.flag("cancelled"),
            finished=(state_dir / "summary.json").is_file()
            and all(c.state is ChunkState.DONE for c in last),
            cost=cost_report(
                model,
                pricing,
                totals.input_tokens,
                totals.output_tokens,
                totals.cached_tokens,
            ),
            retry_length=ledger.flag("retry_length"),
        )
    finally:
        ledger.close()


def cancel_run(target: Path, *, client: openai.OpenAI) -> list[str]:
    """Stop a run: no new batches, and every batch in flight cancelled. Returns their ids.

    A batch that finished meanwhile (the server answers 409/400/404) is left as it is:
    the run collects its results. A cancelled run stays cancelled; running it again
    submits nothing.
    """
    state_dir = find_state_dir(target)
    ledger = Ledger(state_dir)
    try:
        ledger.set_flag("cancelled", True)
        cancelled = []
        for c in ledger.chunks():
            if c.batch_id and c.state is ChunkState.SUBMITTED:
                try:
                    client.batches.cancel(c.batch_id)
                except (openai.ConflictError, openai.BadRequestError, openai.NotFoundError):
                    continue  # already finished (or gone): nothing to cancel
                cancelled.append(c.batch_id)
        return cancelled
    finally:
        ledger.close()


def spec_from_ledger(ledger: Ledger) -> RequestSpec:
    """The request spec a run was planned with (without its schema's pydantic model)."""
    raw = ledger.get("spec")
    data: dict[str, Any] = orjson.loads(raw) if raw else {}
    data.pop("schema", None)
    return RequestSpec(**data)


def write_run_results(target: Path, *, output: Path | None = None) -> tuple[Path, int]:
    """Write the merged output of what the run has finished so far; returns (path, rows)."""
    state_dir = find_state_dir(target)
    ledger = Ledger(state_dir)
    try:
        input_path = Path(ledger.get("input") or "")
        out = output or Path(ledger.get("output") or "results.jsonl")
        rows = write_results(
            ledger,
            input_path,
            spec_from_ledger(ledger),
            out,
            batch_file=ledger.flag("batch_file"),
        )
        return out, rows
    finally:
        ledger.close()


def connect(
    *, base_url: str | None, api_key: str | None, state_dir: Path, stack: contextlib.ExitStack
) -> openai.OpenAI:
    """The SDK client ``status``/``cancel`` use (same rules as ``run``)."""
    client, _ = open_client(
        RunConfig(input=Path("."), base_url=base_url, api_key=api_key), state_dir, stack
    )
    return client
