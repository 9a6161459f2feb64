"""Store records to wire objects."""

from __future__ import annotations

from batchd.protocol import (
    Batch,
    BatchErrorData,
    BatchErrors,
    BatchRequestCounts,
    BatchUsage,
    FileObject,
    InputTokensDetails,
    OutputTokensDetails,
)
from batchd.states import BatchPhase
from batchd.store.records import BatchRecord, FileRecord


def file_object(rec: FileRecord) -> FileObject:
    return FileObject(
        id=rec.id,
        bytes=rec.bytes,
        created_at=rec.created_at,
        expires_at=rec.expires_at,
        filename=rec.filename,
        purpose=rec.purpose,
        status="processed",
        status_details=rec.status_details,
    )


def batch_object(rec: BatchRecord) -> Batch:
    u = rec.usage
    # Internally a batch being finalized after a cancel or expiry keeps its
    # user-facing status; only a normal finish shows "finalizing".
    return Batch(
        id=rec.id,
        endpoint=rec.endpoint,
        model=rec.model,
        errors=(
            BatchErrors(data=[BatchErrorData(**e) for e in rec.errors]) if rec.errors else None
        ),
        input_file_id=rec.input_file_id,
        completion_window=rec.completion_window,
        status=rec.status,
        output_file_id=rec.output_file_id if rec.phase == BatchPhase.DONE else None,
        error_file_id=rec.error_file_id if rec.phase == BatchPhase.DONE else None,
        created_at=rec.created_at,
        in_progress_at=rec.in_progress_at,
        expires_at=rec.expires_at,
        finalizing_at=rec.finalizing_at,
        completed_at=rec.completed_at,
        failed_at=rec.failed_at,
        expired_at=rec.expired_at,
        cancelling_at=rec.cancelling_at,
        cancelled_at=rec.cancelled_at,
        request_counts=BatchRequestCounts(
            total=rec.total, completed=rec.completed, failed=rec.failed
        ),
        usage=BatchUsage(
            input_tokens=u.input_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=u.cached_tokens),
            output_tokens=u.output_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=u.reasoning_tokens),
            total_tokens=u.total_tokens,
        ),
        metadata=rec.metadata,
    )
