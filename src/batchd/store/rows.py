"""Converting between store records and table rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from batchd.states import BatchPhase, BatchStatus, StopReason
from batchd.store.records import BatchRecord, FileRecord, ShardRecord, Usage


class RowLike(Protocol):
    """A SQLAlchemy ``Row`` or anything else exposing the same ``_mapping``."""

    @property
    def _mapping(self) -> Mapping[Any, Any]: ...


def _file_values(rec: FileRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "tenant": rec.tenant,
        "filename": rec.filename,
        "purpose": rec.purpose,
        "bytes": rec.bytes,
        "created_at": rec.created_at,
        "expires_at": rec.expires_at,
        "status": rec.status,
        "status_details": rec.status_details,
        "deleted_at": rec.deleted_at,
    }


def _file(row: RowLike) -> FileRecord:
    m = row._mapping
    return FileRecord(
        id=m["id"],
        tenant=m["tenant"],
        filename=m["filename"],
        purpose=m["purpose"],
        bytes=m["bytes"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        status=m["status"],
        status_details=m["status_details"],
        deleted_at=m["deleted_at"],
    )


_BATCH_PLAIN = (
    "id",
    "tenant",
    "input_file_id",
    "endpoint",
    "completion_window",
    "status",
    "phase",
    "created_at",
    "expires_at",
    "model",
    "metadata",
    "errors",
    "output_file_id",
    "error_file_id",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "total",
    "completed",
    "failed",
    "output_expires_after",
    "stop_reason",
    "priority",
)


def _batch_values(rec: BatchRecord) -> dict[str, Any]:
    values = {name: getattr(rec, name) for name in _BATCH_PLAIN}
    u = rec.usage
    values.update(
        input_tokens=u.input_tokens,
        cached_tokens=u.cached_tokens,
        output_tokens=u.output_tokens,
        reasoning_tokens=u.reasoning_tokens,
        total_tokens=u.total_tokens,
    )
    return values


def _batch(row: RowLike) -> BatchRecord:
    m = row._mapping
    rec = BatchRecord(**{name: m[name] for name in _BATCH_PLAIN})
    # The columns are plain strings; the record carries the state types.
    rec.status = BatchStatus(rec.status)
    rec.phase = BatchPhase(rec.phase)
    rec.stop_reason = StopReason(rec.stop_reason) if rec.stop_reason else None
    rec.usage = Usage(
        input_tokens=m["input_tokens"],
        cached_tokens=m["cached_tokens"],
        output_tokens=m["output_tokens"],
        reasoning_tokens=m["reasoning_tokens"],
        total_tokens=m["total_tokens"],
    )
    return rec


def _shard(row: RowLike) -> ShardRecord:
    m = row._mapping
    return ShardRecord(
        batch_id=m["batch_id"],
        shard_no=m["shard_no"],
        start_offset=m["start_offset"],
        end_offset=m["end_offset"],
        first_line=m["first_line"],
        last_line=m["last_line"],
        n_tasks=m["n_tasks"],
    )
