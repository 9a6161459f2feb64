"""batchd: a self-hosted OpenAI-compatible Batch API, and a pipeline for bulk LLM work.

The pipeline's Python API is re-exported here; see :mod:`batchd.pipeline`.
Importing ``batchd`` starts nothing and loads the pipeline only when one of its
names is first used (``batchd serve`` never pays for it).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchd.pipeline import (
        BatchRunner,
        ChunkStatus,
        CostReport,
        Estimate,
        InputError,
        InvalidInput,
        LedgerMismatch,
        PipelineError,
        RemoteError,
        RequestSpec,
        RunConfig,
        RunStatus,
        RunSummary,
        SchemaSpec,
        cancel_run,
        estimate,
        make_spec,
        run_batch,
        run_status,
        schema_from_file,
        schema_from_model,
        validate_file,
        write_run_results,
    )

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


def __getattr__(name: str) -> Any:
    if name in __all__:
        from batchd import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'batchd' has no attribute {name!r}")
