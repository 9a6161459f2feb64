"""The pipeline's error tree.

::

    PipelineError              anything the pipeline refuses or cannot finish
    ├── InputError             the input file or the options cannot make requests
    ├── InvalidInput           request lines break the batch rules (has a report)
    ├── LedgerMismatch         the state dir belongs to a different run
    └── RemoteError            the batch API answered something unusable

The CLI turns these into a message and exit status 2; nothing else is caught.
"""

from __future__ import annotations

from batchd.validation import ValidationReport


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""


class InputError(PipelineError):
    """The input or the options cannot be turned into request lines."""


class InvalidInput(PipelineError):
    """Validation found problems; nothing was uploaded."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(
            f"the input has {report.error_count} invalid line(s); nothing was uploaded"
        )
        self.report = report


class LedgerMismatch(PipelineError):
    """The ledger in the state dir was written by a run with other inputs or options."""


class RemoteError(PipelineError):
    """The batch API returned something the pipeline cannot continue from."""
