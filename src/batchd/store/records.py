"""Rows as the store hands them out: plain dataclasses, no ORM, no wire shapes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypedDict, TypeVar

from batchd.states import BatchPhase, BatchStatus, StopReason

T = TypeVar("T")


@dataclass(slots=True)
class FileRecord:
    id: str
    tenant: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None = None
    status: str = "processed"
    status_details: str | None = None
    deleted_at: int | None = None


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.cached_tokens += other.cached_tokens
        self.output_tokens += other.output_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.total_tokens += other.total_tokens


@dataclass(slots=True)
class BatchRecord:
    id: str
    tenant: str
    input_file_id: str
    endpoint: str
    completion_window: str
    status: BatchStatus
    created_at: int
    expires_at: int
    phase: BatchPhase = BatchPhase.VALIDATE
    """Internal: ``validate`` -> ``run`` -> ``finalize`` -> ``done``."""
    model: str | None = None
    metadata: dict[str, str] | None = None
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    usage: Usage = field(default_factory=Usage)
    output_expires_after: int | None = None
    stop_reason: StopReason | None = None
    """Set once the batch must stop sending requests."""
    priority: int = 0
    """Higher runs first; from ``metadata.priority`` (see :func:`priority_of`)."""


@dataclass(frozen=True, slots=True)
class ShardRecord:
    """A contiguous range of request lines, the unit a worker claims."""

    batch_id: str
    shard_no: int
    start_offset: int
    end_offset: int
    first_line: int
    last_line: int
    n_tasks: int


@dataclass(frozen=True, slots=True)
class ResultRow:
    """The durable outcome of one request line."""

    batch_id: str
    line_no: int
    custom_id: str
    ok: bool
    data: bytes
    """The complete output (or error) file line, without newline."""
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool


PRIORITY_BOUND = 1_000_000


def priority_of(metadata: dict[str, str] | None) -> int:
    """A batch's priority: the integer in ``metadata.priority``, else 0 (clamped)."""
    raw = (metadata or {}).get("priority")
    try:
        value = int(str(raw).strip()) if raw is not None else 0
    except ValueError:
        return 0
    return max(-PRIORITY_BOUND, min(PRIORITY_BOUND, value))


class BackendUse(TypedDict):
    """What a worker tells the registry about one backend it sends to."""

    keys: list[str]
    """The tenants (API keys) it has work for there."""
    holds: int
    """Slots it may hold there: its part of the limit, or more while a cut drains."""


RegistryDecision = Callable[[dict[str, dict[str, BackendUse]]], Mapping[str, BackendUse]]
"""Given the live workers and what each said of its backends, what one worker says now
(``register_worker``)."""
