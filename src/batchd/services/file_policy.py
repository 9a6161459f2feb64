"""What a new File must satisfy, whichever way its bytes arrived (one upload or the
parts of an Upload): purpose, name, size and expiry."""

from __future__ import annotations

from batchd.errors import InvalidRequest
from batchd.protocol import UPLOAD_PURPOSES
from batchd.settings import Settings

MIN_EXPIRY, MAX_EXPIRY = 3600, 2_592_000


def check_purpose(purpose: str | None) -> str:
    if purpose is None:
        raise InvalidRequest(
            "Missing required parameter: 'purpose'.",
            param="purpose",
            code="missing_required_parameter",
        )
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(
            f"Invalid purpose {purpose!r}; expected one of {', '.join(sorted(UPLOAD_PURPOSES))}.",
            param="purpose",
            code="invalid_value",
        )
    return purpose


def check_filename(purpose: str, filename: str, *, param: str = "file") -> None:
    if purpose == "batch" and not filename.lower().endswith(".jsonl"):
        raise InvalidRequest(
            "Batch input files must be JSONL with a .jsonl file name.",
            param=param,
            code="invalid_file_format",
        )


def size_limit(purpose: str | None, settings: Settings) -> int:
    """The largest file of this purpose (``None``: not known yet)."""
    if purpose == "batch":
        return min(settings.max_file_bytes, settings.max_batch_file_bytes)
    return settings.max_file_bytes


def check_expires_after(expires_after: tuple[str, int] | None) -> int | None:
    """The ``expires_after`` seconds, checked; ``None`` when none was asked for."""
    if expires_after is None:
        return None
    anchor, seconds = expires_after
    if anchor != "created_at":
        raise InvalidRequest(
            "expires_after[anchor] must be 'created_at'.",
            param="expires_after[anchor]",
            code="invalid_value",
        )
    if not MIN_EXPIRY <= seconds <= MAX_EXPIRY:
        raise InvalidRequest(
            f"expires_after[seconds] must be between {MIN_EXPIRY} and {MAX_EXPIRY}.",
            param="expires_after[seconds]",
            code="invalid_value",
        )
    return seconds


def file_expiry(purpose: str, seconds: int | None, created: int, settings: Settings) -> int | None:
    """When a new File expires: as asked, else batch inputs after ``batch_file_ttl``."""
    if seconds is not None:
        return created + seconds
    if purpose == "batch":
        return created + settings.batch_file_ttl
    return None
