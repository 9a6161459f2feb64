"""Prefix-aware dispatch: lines that share a prompt prefix go out together.

Model servers cache the work done on a prompt's prefix (vLLM's automatic prefix
caching, SGLang's radix cache, llama.cpp's slots, the embedded engine): a request
whose system prompt or few-shot block was just computed skips it. A batch often
interleaves a few such prefixes; sent in file order, each request may find its
prefix evicted by the others. So the executor reads a bounded window of a shard's
lines ahead (:data:`WINDOW_LINES` lines or :data:`WINDOW_BYTES` bytes, never a
whole shard's bodies) and sends them sorted by their prompt text: sorting puts the
lines with the longest common prefixes next to each other. Order within equal
prompts is kept (the sort is stable). Nothing is sent or held while a line waits
in the window, so the durability rules (a slot held from first try until the
result is durable) are untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

T = TypeVar("T")

WINDOW_LINES = 1024
WINDOW_BYTES = 16 * 1024 * 1024
KEY_CHARS = 8192
"""Only this much of a prompt decides its place (enough for any shared block)."""


def prompt_key(body: dict[str, Any]) -> str:
    """The text a server would see first for this request, model first."""
    parts: list[str] = [str(body.get("model", "")), "\0"]
    size = 0
    for text in _texts(body):
        parts.append(text)
        size += len(text)
        if size >= KEY_CHARS:
            break
    return "".join(parts)[: KEY_CHARS + 64]


def _texts(body: dict[str, Any]) -> list[str]:
    messages = body.get("messages")
    if isinstance(messages, list):
        out: list[str] = []
        for m in messages:
            if not isinstance(m, dict):
                continue
            out.append(f"{m.get('role', '')}\x1f")
            content = m.get("content")
            if isinstance(content, str):
                out.append(content)
            elif isinstance(content, list):
                out.extend(
                    str(p.get("text", "")) for p in content if isinstance(p, dict)
                )
            out.append("\x1e")
        return out
    for field in ("prompt", "input", "instructions"):
        value = body.get(field)
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and isinstance(value[0], str):
            return [value[0]]
    return []


async def in_prefix_order(
    items: AsyncIterator[T],
    *,
    key: Callable[[T], str],
    size: Callable[[T], int],
    window_lines: int = WINDOW_LINES,
    window_bytes: int = WINDOW_BYTES,
) -> AsyncIterator[T]:
    """``items`` again, each window of them sorted by ``key``."""
    window: list[tuple[str, T]] = []
    held = 0
    async for item in items:
        window.append((key(item), item))
        held += size(item)
        if len(window) >= window_lines or held >= window_bytes:
            window.sort(key=lambda kv: kv[0])
            for _, it in window:
                yield it
            window, held = [], 0
    window.sort(key=lambda kv: kv[0])
    for _, it in window:
        yield it
