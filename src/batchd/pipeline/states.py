"""The states a run's ledger records, as types: a typo is a type error, not a stuck run.

A chunk (one batch file) walks::

    planned -> uploading -> uploaded -> creating -> submitted -> finished -> done
                 (intent)                 (intent)

A request line is ``pending`` until its chunk is collected, then ``ok``,
``failed`` or ``length`` (a complete answer cut off by the token limit). The
values are what the ledger stores, so ledgers written before these types existed
read the same.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class ChunkState(StrEnum):
    """Where one chunk stands (see the module docstring)."""

    PLANNED = "planned"
    """Written to disk, nothing sent yet."""
    UPLOADING = "uploading"
    """Intent: the upload may have reached the server (look for it before uploading again)."""
    UPLOADED = "uploaded"
    """The file is on the server (``file_id``)."""
    CREATING = "creating"
    """Intent: the batch may exist on the server (look for it before creating another)."""
    SUBMITTED = "submitted"
    """The batch runs (``batch_id``); polled until it ends."""
    FINISHED = "finished"
    """The batch ended (or was refused); its output and error files are to be read."""
    DONE = "done"
    """Every line of the chunk has its outcome in the ledger."""


NOT_SENT = frozenset({ChunkState.PLANNED, ChunkState.UPLOADING, ChunkState.UPLOADED})
"""No batch exists for these yet: a cancelled run never starts them."""
IN_FLIGHT = frozenset({ChunkState.CREATING, ChunkState.SUBMITTED})
"""Chunks that count against ``max_in_flight``."""
IN_BATCHES = frozenset({ChunkState.SUBMITTED, ChunkState.FINISHED})
"""Chunks whose batch counts (completed/failed) are progress not yet in the ledger."""


class LineStatus(StrEnum):
    """What the ledger knows of one request line."""

    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"
    LENGTH = "length"
    """A complete response that was cut off by the token limit."""


Answered = Literal[LineStatus.OK, LineStatus.FAILED, LineStatus.LENGTH]
"""The status of a line whose result came back (never ``pending``)."""

MetaKey = Literal[
    "run_id",
    "fingerprint",
    "endpoint",
    "model",
    "input",
    "output",
    "spec",
    "price_input",
    "price_output",
]
"""Text facts about the run, in the ledger's ``meta`` table."""

Flag = Literal["planned", "batch_file", "retry_length", "cancelled"]
"""Yes/no facts about the run, in the ledger's ``meta`` table.

``planned``: the plan was committed whole. ``batch_file``: the input was a ready
batch JSONL. ``retry_length``: cut-off answers are resubmitted. ``cancelled``:
``batchd cancel`` stopped the run.
"""
