"""Helpers shared by the embedded-model tests."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchd.backends.local import LocalBackend

CHAT_MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"


async def send(backend: LocalBackend, endpoint: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST-like helper: status and decoded JSON body."""
    resp = await backend.send(endpoint, json.dumps(body).encode())
    assert resp.request_id
    return resp.status_code, json.loads(resp.body)


def chat_body(content: str, **extra: Any) -> dict[str, Any]:
    """A one-message chat request to the default chat model."""
    return {"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}], **extra}
