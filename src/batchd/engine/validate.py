"""The ``validating`` phase: one streaming pass over the input file.

The pass checks every line and, for a valid file, cuts it into shards of at most
``shard_size`` request lines (small batches into a few per live worker,
engine/shards.py),
remembering their byte ranges so workers can read their shard without scanning the
file.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from batchd.blobs.base import BlobStore
from batchd.clock import now
from batchd.engine.events import Observers
from batchd.engine.queue_limits import LimitsFor, QueueLimits, limit_error
from batchd.engine.shards import ShardCutter
from batchd.jsonl import iter_lines
from batchd.states import BatchStatus
from batchd.store.base import Store
from batchd.store.records import BatchRecord
from batchd.tokens import PromptTokens
from batchd.validation import FileValidator

log = logging.getLogger(__name__)


async def validate_batch(
    batch: BatchRecord,
    *,
    owner: str,
    store: Store,
    blobs: BlobStore,
    max_tasks: int,
    max_errors: int,
    max_line_bytes: int,
    shard_size: int,
    observers: Observers | None = None,
    model_served: Callable[[str], bool] | None = None,
    limits_for: LimitsFor | None = None,
    tokenizer_for: Callable[[str], Callable[[str], list[int]] | None] | None = None,
    workers: int = 1,
) -> None:
    """``workers``: how many workers are live, so a small batch is cut into pieces
    for each of them (engine/shards.py)."""
    validator = FileValidator(
        endpoint=batch.endpoint,
        max_tasks=max_tasks,
        max_errors=max_errors,
        model_served=model_served,
        count_tokens=PromptTokens(tokenizer_for),
    )
    cutter = ShardCutter(batch.id, shard_size, workers=workers)
    try:
        await _scan(batch, blobs, validator, cutter, max_line_bytes)
    except FileNotFoundError:
        message = f"The input file {batch.input_file_id} no longer exists."
        errors = [{"code": "missing_input_file", "message": message, "param": None, "line": None}]
        if await store.fail_batch(
            batch.id, owner, errors=errors, total=0, model=None, now=now()
        ):
            await _announce(store, batch.id, observers)
        return
    report = validator.finish()
    if not report.ok:
        errors = [dataclasses.asdict(e) for e in report.errors]
        log.info("batch %s failed validation: %d errors", batch.id, report.error_count)
        if await store.fail_batch(
            batch.id, owner, errors=errors, total=report.total, model=report.model, now=now()
        ):
            await _announce(store, batch.id, observers)
        return
    # Admission records the batch's counts on it (so the next batch's check sums them)
    # even without limits: limits set later then see the work already queued.
    limits = limits_for(batch.tenant) if limits_for is not None else QueueLimits()
    refused = await store.admit_batch(
        batch.id, owner, tenant=batch.tenant, tokens=report.input_tokens,
        requests=report.total, max_tokens=limits.max_tokens, max_requests=limits.max_requests,
    )  # fmt: skip
    if refused is not None:
        log.info("batch %s refused by the %s queue limit", batch.id, refused[0])
        if await store.fail_batch(
            batch.id, owner, errors=[limit_error(*refused, report.model)], total=report.total,
            model=report.model, now=now(),
        ):  # fmt: skip
            await _announce(store, batch.id, observers)
        return
    shards = cutter.finish()
    if not await store.start_batch(
        batch.id, owner, total=report.total, model=report.model, shards=shards, now=now()
    ):
        log.warning("batch %s: validated, but another worker took it over meanwhile", batch.id)
        return
    log.info("batch %s validated: %d requests in %d shards", batch.id, report.total, len(shards))


async def _scan(
    batch: BatchRecord,
    blobs: BlobStore,
    validator: FileValidator,
    cutter: ShardCutter,
    max_line_bytes: int,
) -> None:
    async for line in iter_lines(blobs.read(batch.input_file_id), max_line_bytes=max_line_bytes):
        if line.blank:
            continue
        validator.feed(line)
        if validator.report.error_count:
            continue  # no shards are needed for a file that will fail
        cutter.feed(line)


async def _announce(store: Store, batch_id: str, observers: Observers | None) -> None:
    """Tell the observers once: only the worker whose ``fail_batch`` took effect calls it."""
    if observers is None:
        return
    final = await store.get_batch(batch_id, tenant=None)
    if final is not None and final.status == BatchStatus.FAILED:
        observers.batch_finished(final)
