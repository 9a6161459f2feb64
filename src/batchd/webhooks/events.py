"""Webhook event objects, in OpenAI's shape.

``{"object": "event", "id": "evt_…", "type": "batch.completed", "created_at": 1700000000,
"data": {"id": "batch_…"}}`` — the receiver fetches the batch itself for details.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import orjson

EVENT_TYPES: dict[str, str] = {
    "completed": "batch.completed",
    "failed": "batch.failed",
    "expired": "batch.expired",
    "cancelled": "batch.cancelled",
}
"""Terminal batch status -> event type."""


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    id: str
    """``evt_…``; also the ``webhook-id`` header, the same on every retry."""
    type: str
    created_at: int
    batch_id: str

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "object": "event",
                "id": self.id,
                "type": self.type,
                "created_at": self.created_at,
                "data": {"id": self.batch_id},
            }
        )


def batch_event(batch_id: str, status: str, created_at: int) -> WebhookEvent | None:
    """The event for a batch that reached ``status`` (None if no event is sent for it)."""
    kind = EVENT_TYPES.get(status)
    if kind is None:
        return None
    return WebhookEvent(
        id=f"evt_{secrets.token_hex(12)}", type=kind, created_at=created_at, batch_id=batch_id
    )
