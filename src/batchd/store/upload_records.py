"""Rows of the Uploads API (large files sent in parts) and of idempotency keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

UploadStatus = Literal["pending", "completed", "cancelled", "expired"]


@dataclass(slots=True)
class UploadRecord:
    id: str
    tenant: str
    filename: str
    purpose: str
    bytes: int
    """The size the client announced; completion must match it."""
    mime_type: str
    created_at: int
    expires_at: int
    status: UploadStatus = "pending"
    file_id: str | None = None
    """Reserved by the first completion attempt (so a retry writes the same blob), and
    the File's id once ``completed``."""
    file_expires_after: int | None = None
    """``expires_after.seconds`` for the File the upload becomes."""
    purged: bool = False
    """Its part blobs (and an unpublished file blob) are gone."""


@dataclass(frozen=True, slots=True)
class PartRecord:
    id: str
    upload_id: str
    bytes: int
    created_at: int


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A remembered create: who sent which key, a fingerprint of what they sent, and
    (once it finished) the object it created."""

    tenant: str
    key: str
    kind: str
    """``file``, ``batch`` or ``upload``: a key names one create of one kind."""
    fingerprint: str
    created_at: int
    expires_at: int
    object_id: str | None = None
    """``None`` while the first request is still running."""
    response: dict[str, Any] | None = None
    """The object the first request returned, as JSON."""
