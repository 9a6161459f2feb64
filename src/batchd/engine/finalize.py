"""The ``finalizing`` phase: write the output and error files, exactly once.

The input file is read once more in order and merged with the stored results by
line number: each request line yields exactly one output or error line. Lines with
no result (the batch was cancelled or expired first) become ``batch_cancelled`` /
``batch_expired`` error lines; a batch whose window ended after every line had its
result is ``completed``. The file ids are fixed before anything is written,
so a finalization interrupted by a crash is simply done again under the same ids.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson

from batchd.blobs.base import BlobStore, BlobWriter
from batchd.clock import now
from batchd.engine import outcome
from batchd.engine.events import Observers
from batchd.ids import new_file_id
from batchd.jsonl import iter_lines
from batchd.states import FINAL_STATUS, StopReason
from batchd.store.base import Store
from batchd.store.records import BatchRecord, FileRecord

log = logging.getLogger(__name__)

_UNRUN: dict[StopReason | None, tuple[str, str]] = {
    StopReason.CANCEL: ("batch_cancelled", "The batch was cancelled before this request ran."),
    StopReason.EXPIRE: (
        "batch_expired",
        "The batch's completion window ended before this request ran.",
    ),
    None: ("request_not_run", "This request was not run."),
}


async def finalize_batch(
    batch: BatchRecord,
    *,
    owner: str,
    store: Store,
    blobs: BlobStore,
    max_line_bytes: int,
    observers: Observers | None = None,
) -> None:
    out_id = batch.output_file_id or new_file_id()
    err_id = batch.error_file_id or new_file_id()
    if batch.output_file_id is None:
        await store.set_output_ids(batch.id, owner, out_id, err_id)
    out = await blobs.open_writer(out_id)
    err = await blobs.open_writer(err_id)
    try:
        unrun = await _merge(batch, store, blobs, out, err, max_line_bytes)
        out_size = await out.commit()
        err_size = await err.commit()
    except BaseException:
        await out.abort()
        await err.abort()
        raise

    ts = now()
    expires_at = ts + batch.output_expires_after if batch.output_expires_after else None
    files = []
    for file_id, size, kind in ((out_id, out_size, "output"), (err_id, err_size, "error")):
        if size:
            files.append(
                FileRecord(
                    id=file_id,
                    tenant=batch.tenant,
                    filename=f"{batch.id}_{kind}.jsonl",
                    purpose="batch_output",
                    bytes=size,
                    created_at=ts,
                    expires_at=expires_at,
                )
            )
        else:
            await blobs.delete(file_id)
    status = FINAL_STATUS[batch.stop_reason]
    if batch.stop_reason is StopReason.EXPIRE and unrun == 0:
        # The window ended while the last requests were in flight and every one of them
        # finished: nothing was cut short, so the batch completed.
        status = FINAL_STATUS[None]
    finished = await store.finish_batch(
        batch.id,
        owner,
        status=status,
        files=files,
        output_file_id=out_id if out_size else None,
        error_file_id=err_id if err_size else None,
        unrun=unrun,
        now=ts,
    )
    if finished:
        await store.purge_results(batch.id)
        log.info("batch %s %s (%d not run)", batch.id, status, unrun)
        final = await store.get_batch(batch.id, tenant=None)
        if observers is not None and final is not None:
            observers.batch_finished(final)


async def _merge(
    batch: BatchRecord,
    store: Store,
    blobs: BlobStore,
    out: BlobWriter,
    err: BlobWriter,
    max_line_bytes: int,
) -> int:
    results = store.iter_results(batch.id)
    pending = await _next(results)
    unrun = 0
    code, message = _UNRUN[batch.stop_reason]
    async for line in iter_lines(blobs.read(batch.input_file_id), max_line_bytes=max_line_bytes):
        if line.blank:
            continue
        while pending is not None and pending[0] < line.number:
            pending = await _next(results)
        if pending is not None and pending[0] == line.number:
            _, ok, data = pending
            await (out if ok else err).write(data + b"\n")
            pending = await _next(results)
            continue
        custom_id = _custom_id(line.data)
        if custom_id is None:
            continue
        unrun += 1
        await err.write(outcome.error_line(custom_id, code, message) + b"\n")
    return unrun


async def _next(it: AsyncIterator[tuple[int, bool, bytes]]) -> tuple[int, bool, bytes] | None:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None


def _custom_id(raw: bytes) -> str | None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    value = obj.get("custom_id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None
