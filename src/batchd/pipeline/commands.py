"""The pipeline's commands on the ``batchd`` CLI: run, status, results, cancel, validate, estimate.

Each command parses its flags into a :class:`RequestSpec`/:class:`RunConfig`,
calls :mod:`batchd.pipeline.api`, and prints. Exit status: 0 done, 1 some lines
failed (or the input is invalid, for ``validate``), 2 the run could not proceed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import openai
import typer
from rich.console import Console
from rich.table import Table

from batchd.pipeline.api import (
    Estimate,
    cancel_run,
    connect,
    estimate,
    find_state_dir,
    run_status,
    write_run_results,
)
from batchd.pipeline.config import RunConfig
from batchd.pipeline.errors import InvalidInput, PipelineError
from batchd.pipeline.options import (
    ApiKeyOpt,
    BaseUrlOpt,
    CompletionWindowOpt,
    EndpointOpt,
    IdColumnOpt,
    InputColumnOpt,
    MaxBytesOpt,
    MaxInFlightOpt,
    MaxReqOpt,
    MaxRetryRoundsOpt,
    MaxTokensOpt,
    ModelOpt,
    OptPath,
    OutputOpt,
    ParamOpt,
    PollIntervalOpt,
    PollMaxOpt,
    PriceInOpt,
    PriceOutOpt,
    RetryLengthOpt,
    SchemaOpt,
    StateDirOpt,
    SystemOpt,
    TemperatureOpt,
    TemplateOpt,
    TokenLimitWaitOpt,
    request_spec,
    run_config,
)
from batchd.pipeline.planner import make_plan
from batchd.pipeline.runner import BatchRunner, RunSummary
from batchd.validation import ValidationReport

console = Console(stderr=True)
out = Console(soft_wrap=True, highlight=False, markup=False)


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _print_report(report: ValidationReport, source: Path) -> None:
    if report.ok:
        out.print(f"{source}: {report.total} request lines, all valid (model {report.model}).")
        return
    out.print(f"{source}: {report.error_count} problem(s) in {report.total} lines:")
    for e in report.errors:
        where = f"line {e.line}: " if e.line is not None else ""
        out.print(f"  {where}[{e.code}] {e.message}", markup=False)


def _show_estimate(est: Estimate, config: RunConfig, source: Path) -> None:
    """The estimate, or (exit status 2) why the input cannot be planned."""
    if not est.report.ok:
        _print_report(est.report, source)
        raise typer.Exit(2)
    _print_estimate(est, config)


def _print_estimate(est: Estimate, config: RunConfig) -> None:
    table = Table(title=f"chunk plan: {est.requests} requests, {len(est.chunks)} batch(es)")
    for col in ("chunk", "requests", "bytes"):
        table.add_column(col)
    for c in est.chunks[:50]:
        table.add_row(c.id, str(c.requests), f"{c.bytes:,}")
    if len(est.chunks) > 50:
        table.add_row("…", f"+{len(est.chunks) - 50} more", "")
    out.print(table)
    out.print(f"endpoint {est.endpoint}, model {est.model}")
    out.print(
        f"limits: {config.max_requests_per_batch} requests / "
        f"{config.max_bytes_per_batch:,} bytes per batch"
    )
    out.print(f"input tokens: {est.input_tokens:,} ({est.token_method})", highlight=False)
    out.print(f"input cost: {est.input_cost.describe()}", highlight=False)
    if est.max_cost is not None:
        out.print(
            f"upper bound with max output ({est.max_output_tokens:,} tokens): "
            f"{est.max_cost.describe()}",
            highlight=False,
        )
    else:
        out.print("output tokens: unknown before the run (set --max-tokens for an upper bound)")


def _print_summary(summary: RunSummary) -> None:
    out.print(
        f"run {summary.run_id}: {summary.succeeded}/{summary.requests} succeeded, "
        f"{summary.failed} failed after {summary.rounds} retry round(s) "
        f"in {summary.seconds:.1f}s" + (" [cancelled]" if summary.cancelled else ""),
        highlight=False,
    )
    if summary.cut_off:
        out.print(
            f"{summary.cut_off} answer(s) cut off by the token limit (finish_reason: length)"
            + ("" if summary.retry_length else "; kept as answers (--retry-length redoes them)"),
            highlight=False,
        )
    out.print(f"cost: {summary.cost.describe()}", highlight=False)
    for custom_id, reason in summary.failures:
        out.print(f"  failed {custom_id}: {reason}", highlight=False)
    out.print(f"results: {summary.output}", highlight=False)
    if summary.cancelled:
        out.print(
            f"this run was cancelled (batchd cancel): running it again submits nothing; "
            f"delete {summary.state_dir} (or use another --output) to start over",
            highlight=False,
        )


def run(
    input: Annotated[Path, typer.Argument(help="Rows (JSONL/CSV/Parquet) or a ready batch JSONL.")],
    model: ModelOpt = None,
    template: TemplateOpt = None,
    input_column: InputColumnOpt = None,
    system: SystemOpt = None,
    id_column: IdColumnOpt = None,
    endpoint: EndpointOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    temperature: TemperatureOpt = None,
    max_tokens: MaxTokensOpt = None,
    param: ParamOpt = None,
    json_schema: SchemaOpt = None,
    max_requests_per_batch: MaxReqOpt = None,
    max_bytes_per_batch: MaxBytesOpt = None,
    max_retry_rounds: MaxRetryRoundsOpt = None,
    retry_length: RetryLengthOpt = None,
    output: OutputOpt = None,
    state_dir: StateDirOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate, print the chunk plan and cost estimate.")
    ] = False,
    poll_interval: PollIntervalOpt = None,
    poll_max: PollMaxOpt = None,
    max_in_flight: MaxInFlightOpt = None,
    token_limit_wait: TokenLimitWaitOpt = None,
    completion_window: CompletionWindowOpt = None,
    price_input: PriceInOpt = None,
    price_output: PriceOutOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Push every row of INPUT through a batch API; resumable (run the same command again)."""
    options = dict(locals())  # every option, by name: see batchd.pipeline.options
    try:
        spec = request_spec(options)
        config = run_config(input, options)
        if dry_run:
            _show_estimate(estimate(config, spec), config, input)
            return
        summary = BatchRunner(config, spec, console=console, quiet=quiet).run()
    except InvalidInput as exc:
        _print_report(exc.report, input)
        raise _fail(str(exc)) from None
    except PipelineError as exc:
        raise _fail(str(exc)) from None
    _print_summary(summary)
    raise typer.Exit(0 if summary.ok else 1)


def validate(
    file: Annotated[Path, typer.Argument(help="A batch JSONL, or rows with --model/--template.")],
    model: ModelOpt = None,
    template: TemplateOpt = None,
    input_column: InputColumnOpt = None,
    system: SystemOpt = None,
    id_column: IdColumnOpt = None,
    endpoint: EndpointOpt = None,
    max_bytes_per_batch: MaxBytesOpt = None,
) -> None:
    """Check every line with the server's rules, with line numbers; uploads nothing."""
    options = dict(locals())  # every option, by name: see batchd.pipeline.options
    try:
        report = make_plan(run_config(file, options), request_spec(options)).report
    except PipelineError as exc:
        raise _fail(str(exc)) from None
    _print_report(report, file)
    raise typer.Exit(0 if report.ok else 1)


def estimate_command(
    input: Annotated[Path, typer.Argument(help="Rows or a ready batch JSONL.")],
    model: ModelOpt = None,
    template: TemplateOpt = None,
    input_column: InputColumnOpt = None,
    system: SystemOpt = None,
    id_column: IdColumnOpt = None,
    endpoint: EndpointOpt = None,
    max_tokens: MaxTokensOpt = None,
    json_schema: SchemaOpt = None,
    max_requests_per_batch: MaxReqOpt = None,
    max_bytes_per_batch: MaxBytesOpt = None,
    price_input: PriceInOpt = None,
    price_output: PriceOutOpt = None,
) -> None:
    """Print the chunk plan, token count and cost estimate (same as run --dry-run)."""
    options = dict(locals())  # every option, by name: see batchd.pipeline.options
    try:
        config = run_config(input, options)
        est = estimate(config, request_spec(options))
    except PipelineError as exc:
        raise _fail(str(exc)) from None
    _show_estimate(est, config, input)


RunTarget = Annotated[
    Path, typer.Argument(help="The run's output file or its state dir (OUTPUT.batchd).")
]


def status(
    target: RunTarget,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    refresh: Annotated[
        bool, typer.Option("--refresh/--no-refresh", help="Re-read running batches from the API.")
    ] = False,
) -> None:
    """Show a run's chunks and totals from its ledger."""
    try:
        with contextlib.ExitStack() as stack:
            client = None
            if refresh:
                client = connect(
                    base_url=base_url,
                    api_key=api_key,
                    state_dir=find_state_dir(target),
                    stack=stack,
                )
            st = run_status(target, client=client)
    except PipelineError as exc:
        raise _fail(str(exc)) from None
    except openai.APIError as exc:
        raise _fail(f"the API refused: {exc}") from None
    table = Table(title=f"run {st.run_id} (round {st.round})")
    for col in ("chunk", "state", "batch", "status", "requests", "done", "failed"):
        table.add_column(col)
    for c in st.chunks:
        table.add_row(
            c.id,
            c.state,
            c.batch_id or "",
            c.batch_status or "",
            str(c.requests),
            str(c.completed),
            str(c.failed),
        )
    out.print(table)
    t = st.totals
    state = "cancelled" if st.cancelled else "finished" if st.finished else "in progress"
    kept = "" if st.retry_length else " (kept as answers)"
    out.print(
        f"{state}: {t.ok} ok, {t.failed} failed, {t.length} cut off{kept}, {t.pending} pending "
        f"of {t.requests}; {t.input_tokens:,} input / {t.output_tokens:,} output tokens",
        highlight=False,
    )
    out.print(f"cost: {st.cost.describe()}", highlight=False)


def results(
    target: RunTarget,
    output: Annotated[OptPath, typer.Option("--output", "-o", help="Where to write.")] = None,
) -> None:
    """Write the merged results of what a run has finished (in input order)."""
    try:
        path, rows = write_run_results(target, output=output)
    except PipelineError as exc:
        raise _fail(str(exc)) from None
    out.print(f"{rows} rows written to {path}")


def cancel(target: RunTarget, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None) -> None:
    """Cancel a run: its running batches are cancelled and no new ones start."""
    try:
        with contextlib.ExitStack() as stack:
            client = connect(
                base_url=base_url, api_key=api_key, state_dir=find_state_dir(target), stack=stack
            )
            ids = cancel_run(target, client=client)
    except PipelineError as exc:
        raise _fail(str(exc)) from None
    except openai.APIError as exc:
        raise _fail(f"the API refused: {exc}") from None
    out.print(f"cancelled {len(ids)} batch(es): {' '.join(ids)}")


def register(app: typer.Typer) -> None:
    """Add the pipeline's commands to the ``batchd`` app."""
    app.command("run")(run)
    app.command("status")(status)
    app.command("results")(results)
    app.command("cancel")(cancel)
    app.command("validate")(validate)
    app.command("estimate")(estimate_command)
