"""The pipeline: bulk prompts through any OpenAI-compatible Batch API, resumably.

Modules, in dependency order (each imports only those above it)::

    errors, structured, states  error tree; JSON-schema answers; chunk and line states
    config, sources, tokens     what to do; reading rows; counting tokens
    prompts, answers, cost      rows -> request lines; output lines -> outcomes; prices
    ledger                      the SQLite record of every step
    planner, remote, merge      validate + chunk; the SDK calls; merged output
    display, report             progress on screen; progress and summary from the ledger
    steps, rounds               one chunk's step per state; retry rounds
    runner                      the resumable loop: a table from chunk state to step
    api, commands               Python functions; CLI commands
"""

from batchd.pipeline.api import (
    ChunkStatus,
    Estimate,
    RunStatus,
    cancel_run,
    estimate,
    make_spec,
    run_batch,
    run_status,
    validate_file,
    write_run_results,
)
from batchd.pipeline.config import RequestSpec, RunConfig
from batchd.pipeline.cost import CostReport
from batchd.pipeline.errors import (
    InputError,
    InvalidInput,
    LedgerMismatch,
    PipelineError,
    RemoteError,
)
from batchd.pipeline.runner import BatchRunner, RunSummary
from batchd.pipeline.structured import SchemaSpec, schema_from_file, schema_from_model

__all__ = [
    "BatchRunner",
    "ChunkStatus",
    "CostReport",
    "Estimate",
    "InputError",
    "InvalidInput",
    "LedgerMismatch",
    "PipelineError",
    "RemoteError",
    "RequestSpec",
    "RunConfig",
    "RunStatus",
    "RunSummary",
    "SchemaSpec",
    "cancel_run",
    "estimate",
    "make_spec",
    "run_batch",
    "run_status",
    "schema_from_file",
    "schema_from_model",
    "validate_file",
    "write_run_results",
]
