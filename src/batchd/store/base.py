"""The store interface: what services, the engine and the server may ask of a store.

One protocol per concern, composed into :class:`Store`; code that needs only one
concern may take the narrower type. :class:`batchd.store.sql.SqlStore` implements
all of them (SQLite and PostgreSQL); ``tests/store`` is the contract every
implementation meets. Each later concern (uploads, idempotency keys, queue limits,
API keys) arrived as a further protocol composed into ``Store`` the same way.

Claims are leases: ``owner`` is a worker id, ``now``/``until`` are Unix seconds.
A store method that moves a batch or shard on checks that ``owner`` still holds
its lease, so a worker whose lease lapsed (and was taken over) cannot interfere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from batchd.states import BatchStatus, StopReason
from batchd.store.key_records import ApiKeyRecord, TenantUsage
from batchd.store.records import (
    BackendUse,
    BatchRecord,
    FileRecord,
    Page,
    RegistryDecision,
    ResultRow,
    ShardRecord,
)
from batchd.store.upload_records import IdempotencyRecord, PartRecord, UploadRecord


class Listener(Protocol):
    """Wakes this process when another creates work (see store/notify.py)."""

    def start(self) -> None: ...

    async def close(self) -> None: ...


class FileStore(Protocol):
    async def insert_file(self, rec: FileRecord) -> None: ...

    async def get_file(self, file_id: str, *, tenant: str | None) -> FileRecord | None:
        """A live (not deleted) file; ``tenant=None`` ignores ownership."""
        ...

    async def list_files(
        self, *, tenant: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> Page[FileRecord]: ...

    async def delete_file(self, file_id: str, *, tenant: str, now: int) -> bool: ...

    async def file_in_use(self, file_id: str) -> bool:
        """True while an unfinished batch reads this file."""
        ...

    async def files_to_purge(self, now: int, *, limit: int = 100) -> list[FileRecord]:
        """Deleted or expired files whose bytes no running batch still needs."""
        ...

    async def forget_files(self, file_ids: Sequence[str]) -> None: ...


class BatchStore(Protocol):
    """Batches as the API sees them, and their whole-batch phases."""

    async def insert_batch(self, rec: BatchRecord) -> None: ...

    async def get_batch(self, batch_id: str, *, tenant: str | None) -> BatchRecord | None: ...

    async def list_batches(
        self, *, tenant: str, after: str | None, limit: int
    ) -> Page[BatchRecord]: ...

    async def request_cancel(self, batch_id: str, *, tenant: str, now: int) -> BatchRecord | None:
        """Move a running batch to ``cancelling``; a finished one is returned unchanged."""
        ...

    async def request_expiry(self, now: int) -> int:
        """Flag every running batch whose window has passed; returns how many."""
        ...

    async def stop_reasons(self, batch_ids: Iterable[str]) -> dict[str, StopReason | None]: ...

    async def batch_gauges(self) -> tuple[dict[str, int], int]:
        """Batches per status (all tenants), and request lines not yet finished."""
        ...

    async def start_batch(
        self,
        batch_id: str,
        owner: str,
        *,
        total: int,
        model: str | None,
        shards: Sequence[ShardRecord],
        now: int,
    ) -> bool:
        """Validation passed: record the shards and enter the run phase; False (and
        nothing changes) when ``owner`` no longer holds the batch's validation."""
        ...

    async def fail_batch(
        self,
        batch_id: str,
        owner: str,
        *,
        errors: list[dict[str, Any]],
        total: int,
        model: str | None,
        now: int,
    ) -> bool:
        """Fail a batch in validation; False (nothing changed) unless ``owner`` holds it."""
        ...

    async def set_output_ids(
        self, batch_id: str, owner: str, output_file_id: str, error_file_id: str
    ) -> None:
        """Fix the ids of the files finalization writes, so a retry reuses them."""
        ...

    async def finish_batch(
        self,
        batch_id: str,
        owner: str,
        *,
        status: BatchStatus,
        files: Sequence[FileRecord],
        output_file_id: str | None,
        error_file_id: str | None,
        unrun: int,
        now: int,
    ) -> bool:
        """Record the output files and the final status, exactly once."""
        ...


class ClaimStore(Protocol):
    """Leases on batches (validate, finalize) and shards (run)."""

    async def claim_validation(
        self, owner: str, now: float, until: float
    ) -> BatchRecord | None: ...

    async def claim_finalization(self, owner: str, now: float, until: float) -> BatchRecord | None:
        """A batch ready to finalize: all shards done, or stopped with none in flight."""
        ...

    async def claim_shard(
        self,
        owner: str,
        now: float,
        until: float,
        *,
        newcomers_only: bool = False,
        new_tenants_only: bool = False,
        weight_of: Callable[[str], float] | None = None,
        can_run: Callable[[str | None], bool] | None = None,
    ) -> ShardRecord | None:
        """The next shard to run, in the fair order of store/fair_order.py: a tenant
        ``owner`` already runs while another working worker runs none of it last; then
        by the tenant's shards running anywhere per ``weight_of(tenant)`` (default
        1.0), priority within the tenant, the batch's running shards, age.

        ``newcomers_only``: only from a batch with no shard running anywhere, or from a
        tenant with no shard running on ``owner``. ``new_tenants_only``: only from a
        tenant with no shard running on ``owner``. ``can_run(model)``: only from
        batches of a model ``owner`` may send to (default: any).
        """
        ...

    async def release_shard(self, shard: ShardRecord, owner: str) -> bool:
        """Give the shard back unfinished; False if ``owner`` no longer held it."""
        ...

    async def complete_shard(self, shard: ShardRecord, owner: str) -> bool:
        """Mark the shard done; False (and nothing changes) if ``owner`` no longer held it."""
        ...

    async def renew_leases(self, owner: str, until: float) -> None: ...

    async def lease_owners(self, now: float) -> set[str]:
        """Owners holding a live lease on anything."""
        ...

    async def release_leases(self, owners: Sequence[str]) -> None:
        """Free every claim of owners known to be dead, so work resumes at once."""
        ...


class ResultStore(Protocol):
    """Per-line outcomes, durable before a request counts as done."""

    async def done_lines(self, batch_id: str, first_line: int, last_line: int) -> set[int]: ...

    async def record_results(self, rows: Sequence[ResultRow]) -> int:
        """Store outcomes and bump the batches' counters, in one transaction.

        A line that already has a result keeps it; rows of a batch no longer in its
        run phase are dropped. Returns how many rows were new.
        """
        ...

    def iter_results(self, batch_id: str) -> AsyncIterator[tuple[int, bool, bytes]]:
        """``(line_no, ok, data)`` in line order."""
        ...

    async def purge_results(self, batch_id: str) -> None:
        """Drop per-line results (and shards) once they live in the output files."""
        ...


class WorkerStore(Protocol):
    """The registry of live workers (for sharing backend concurrency limits)."""

    async def register_worker(
        self,
        owner: str,
        now: float,
        since: float,
        decide: RegistryDecision,
    ) -> None:
        """Record that ``owner`` is alive and what it says of each backend it sends to.

        ``decide`` gets the workers live since ``since`` (``owner`` among them when it
        was), each with what it said of its backends, and returns what ``owner`` says
        now. The read and the write are one step no other registration interleaves
        with, so a worker growing its part of a limit into what the others leave free
        (engine/limits.py) never races another doing the same."""
        ...

    async def live_workers(self, since: float) -> dict[str, dict[str, BackendUse]]: ...

    async def forget_workers(self, *, owners: Sequence[str] = (), before: float = 0.0) -> None: ...


class UploadStore(Protocol):
    """Large files sent in parts (the Uploads API); the part bytes are blobs."""

    async def insert_upload(self, rec: UploadRecord) -> None: ...

    async def get_upload(self, upload_id: str, *, tenant: str | None) -> UploadRecord | None: ...

    async def add_part(
        self, part: PartRecord, *, tenant: str, now: int, max_total: int
    ) -> tuple[bool, UploadRecord | None]:
        """Record a part whose blob is written, if its upload is still pending, unexpired
        and its parts stay within ``max_total`` bytes; returns (added, the upload)."""
        ...

    async def upload_parts(self, upload_id: str) -> list[PartRecord]: ...

    async def reserve_upload_file(self, upload_id: str, file_id: str) -> str:
        """The File id this upload completes into: ``file_id`` unless one was reserved."""
        ...

    async def complete_upload(self, upload_id: str, file: FileRecord, *, now: int) -> bool:
        """Publish the File and mark the upload completed, in one transaction; False
        (and nothing changes) unless the upload was still pending and unexpired."""
        ...

    async def cancel_upload(self, upload_id: str, *, tenant: str) -> UploadRecord | None:
        """Move a pending upload to ``cancelled``; others are returned unchanged."""
        ...

    async def expire_uploads(self, now: int) -> int:
        """Mark pending uploads past their expiry ``expired``; returns how many."""
        ...

    async def uploads_to_purge(self, *, limit: int = 100) -> list[UploadRecord]:
        """Finished (completed, cancelled, expired) uploads whose parts are not purged."""
        ...

    async def forget_upload_parts(self, upload_id: str) -> None:
        """Drop the part rows (their blobs are gone) and mark the upload purged."""
        ...


class IdempotencyStore(Protocol):
    """Idempotency keys of creates, per tenant, for a limited time."""

    async def claim_idempotency_key(
        self, rec: IdempotencyRecord, *, stale_before: int
    ) -> IdempotencyRecord | None:
        """Take the key for a new request: ``None`` if this caller now holds it, else the
        live row of whoever holds it. Expired rows, and claims made before
        ``stale_before`` that never finished, are replaced."""
        ...

    async def finish_idempotency_key(
        self, tenant: str, key: str, *, object_id: str, response: dict[str, Any]
    ) -> None: ...

    async def release_idempotency_key(self, tenant: str, key: str) -> None:
        """Forget an unfinished key (its request failed: a retry may run afresh)."""
        ...

    async def purge_idempotency_keys(self, now: int) -> int: ...


class QueueStore(Protocol):
    """Per-tenant bounds on what unfinished batches may hold (queue limits)."""

    async def admit_batch(
        self,
        batch_id: str,
        owner: str,
        *,
        tenant: str,
        tokens: int,
        requests: int,
        max_tokens: int | None,
        max_requests: int | None,
    ) -> tuple[str, int] | None:
        """Count the batch against its tenant's unfinished batches, atomically: ``None``
        when it fits (its counts are recorded on it), else ``("tokens"|"requests", the
        limit)`` and nothing changes."""
        ...


class KeyStore(Protocol):
    """API keys created with ``batchd keys`` (digests only), and usage per tenant."""

    async def insert_api_key(self, rec: ApiKeyRecord) -> bool:
        """False (and nothing written) when a key of that name already exists."""
        ...

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, revoked ones too, oldest first."""
        ...

    async def revoke_api_key(self, name: str, *, now: int) -> ApiKeyRecord | None:
        """Revoke the key (a revoked one stays as it was); None if there is no such key."""
        ...

    async def note_key_use(self, last_used: Mapping[str, int]) -> None:
        """Record when keys (by digest) were last used; never moves a time back."""
        ...

    async def usage_by_tenant(self, tenant: str | None = None) -> dict[str, TenantUsage]:
        """Batches, requests and tokens per tenant, over all its batches (only
        ``tenant``'s when given; a tenant with no batch is absent)."""
        ...


class Store(
    FileStore,
    BatchStore,
    ClaimStore,
    ResultStore,
    WorkerStore,
    UploadStore,
    IdempotencyStore,
    QueueStore,
    KeyStore,
    Protocol,
):
    """Everything batchd keeps besides file bytes (those are in a blob store)."""

    async def open(self) -> None:
        """Bring the database to the current schema; call once before use."""
        ...

    async def close(self) -> None: ...

    def listener(self, callback: Callable[[], None]) -> Listener | None:
        """Calls ``callback`` when another process creates work, where the store can."""
        ...
