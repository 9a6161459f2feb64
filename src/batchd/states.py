"""The states of a batch, as types: a typo is a type error, and lists are derived.

``BatchStatus`` is what users see (OpenAI's ``Batch.status``, field for field).
``BatchPhase`` is the engine's own progress, which the store's claims key on:
``validate`` -> ``run`` -> ``finalize`` -> ``done``. The two differ on purpose: a
batch cancelled while running stays ``cancelling`` through its ``finalize`` phase,
and only a batch finishing normally shows ``finalizing``. ``StopReason`` says why
a running batch must stop sending requests.

Each is a ``StrEnum``, so members are the very strings stored in the database and
sent on the wire (``BatchStatus.COMPLETED == "completed"``).
"""

from __future__ import annotations

from enum import StrEnum


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


TERMINAL_STATUSES: frozenset[BatchStatus] = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)
RUNNING_STATUSES: tuple[BatchStatus, ...] = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)
"""Statuses a cancel request moves to ``cancelling``."""


class BatchPhase(StrEnum):
    VALIDATE = "validate"
    RUN = "run"
    FINALIZE = "finalize"
    DONE = "done"


ACTIVE_PHASES: tuple[BatchPhase, ...] = (BatchPhase.VALIDATE, BatchPhase.RUN, BatchPhase.FINALIZE)
"""Phases in which a batch still reads its input file."""


class StopReason(StrEnum):
    CANCEL = "cancel"
    EXPIRE = "expire"


FINAL_STATUS: dict[StopReason | None, BatchStatus] = {
    StopReason.CANCEL: BatchStatus.CANCELLED,
    StopReason.EXPIRE: BatchStatus.EXPIRED,
    None: BatchStatus.COMPLETED,
}
"""The status a finalized batch ends in, by why it stopped (``None``: it did not)."""
