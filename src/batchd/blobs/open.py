"""Choosing the blob store from the ``storage`` setting."""

from __future__ import annotations

from pathlib import Path

from batchd.blobs.base import BlobStore
from batchd.blobs.local import LocalBlobStore


def open_blob_store(storage: str | None, data_dir: Path) -> BlobStore:
    """``None``: the data dir; ``file:///path``: that directory; ``s3://bucket/prefix``."""
    if not storage:
        return LocalBlobStore(data_dir)
    scheme, sep, rest = storage.partition("://")
    if not sep:
        raise ValueError(f"storage must be file:///path or s3://bucket/prefix, not {storage!r}")
    if scheme == "file":
        return LocalBlobStore(Path(rest).expanduser())
    if scheme == "s3":
        from batchd.blobs.s3 import S3BlobStore

        return S3BlobStore.from_url(storage)
    raise ValueError(f"unknown storage scheme {scheme!r} (file:// or s3://)")
