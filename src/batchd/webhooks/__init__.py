"""Webhooks: batch events POSTed to one URL, signed the Standard Webhooks way.

``events``      the event objects (OpenAI's shape: ``{"object": "event", "type": ...}``)
``signing``     ``whsec_`` secrets, ``webhook-signature: v1,<base64 HMAC-SHA256>``
``dispatcher``  the engine observer that queues events and delivers them with retries
"""

from batchd.webhooks.dispatcher import WebhookDispatcher, build_dispatcher
from batchd.webhooks.events import EVENT_TYPES, WebhookEvent, batch_event
from batchd.webhooks.signing import InvalidSignature, WebhookSigner

__all__ = [
    "EVENT_TYPES",
    "InvalidSignature",
    "WebhookDispatcher",
    "WebhookEvent",
    "WebhookSigner",
    "batch_event",
    "build_dispatcher",
]
