"""Rows of API keys kept in the database, and what each tenant has used."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    name: str
    digest: str
    """SHA-256 (hex) of the secret; the secret itself is never stored."""
    tenant: str
    created_at: int
    revoked_at: int | None = None
    last_used_at: int | None = None
    max_enqueued_tokens: int | None = None
    """Overrides the server-wide ``max_enqueued_tokens`` for this key; None: the default."""
    max_enqueued_requests: int | None = None
    weight: float = 1.0
    """Its share of every backend relative to other keys with work there."""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """What one tenant's batches have used, summed over all of them (any status)."""

    batches: int = 0
    requests: int = 0
    """Request lines with a final outcome (completed or failed)."""
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
