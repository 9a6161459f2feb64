"""Cleaning up after Uploads: expire the stale ones, drop the parts of finished ones.

Runs in the worker's periodic purge. Parts are blobs of their own; they go once their
upload is completed (the File has its own copy), cancelled or expired. An upload that
expired or was cancelled after a completion reserved its File id may have left that
File's blob (a crash before the File was published): it goes too, as no File row can
point at it any more (publishing requires a pending upload).
"""

from __future__ import annotations

import logging

from batchd.blobs.base import BlobStore
from batchd.store.base import Store
from batchd.store.upload_records import UploadRecord

log = logging.getLogger(__name__)


async def drop_upload_blobs(store: Store, blobs: BlobStore, upload: UploadRecord) -> None:
    """Delete the part blobs (and an unpublished File blob), then forget the parts."""
    for part in await store.upload_parts(upload.id):
        await blobs.delete(part.id)
    if upload.status != "completed" and upload.file_id:
        await blobs.delete(upload.file_id)
    await store.forget_upload_parts(upload.id)


async def purge_uploads(store: Store, blobs: BlobStore, now: int) -> int:
    """Expire pending uploads past their time, then purge finished ones; returns how
    many uploads were purged."""
    expired = await store.expire_uploads(now)
    if expired:
        log.info("%d upload(s) expired", expired)
    purged = 0
    while True:
        batch = await store.uploads_to_purge(limit=100)
        if not batch:
            return purged
        for upload in batch:
            await drop_upload_blobs(store, blobs, upload)
            purged += 1
