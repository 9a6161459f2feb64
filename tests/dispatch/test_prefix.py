"""Prefix-aware dispatch order (engine/prefix.py)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from batchd.engine.prefix import in_prefix_order, prompt_key

pytestmark = pytest.mark.anyio


def chat(system: str, user: str, model: str = "m") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    }


async def aiter(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def test_lines_sharing_a_prefix_go_out_together_in_bounded_windows() -> None:
    systems = [f"You label texts. Style {k}. " + "few-shot example " * 50 for k in range(4)]
    bodies = [chat(systems[i % 4], f"text {i}") for i in range(40)]
    out = [
        b
        async for b in in_prefix_order(
            aiter(bodies), key=prompt_key, size=lambda b: 1, window_lines=20
        )
    ]
    assert sorted(map(id, out)) == sorted(map(id, bodies))  # nothing lost or doubled
    # Within each window of 20, one run per system prompt (4 runs), not 20 switches.
    for w in (out[:20], out[20:]):
        runs = 1 + sum(
            1
            for a, b in itertools.pairwise(w)
            if a["messages"] != b["messages"] and a["messages"][0] != b["messages"][0]
        )
        assert runs == 4
        assert all(b in bodies[:20] for b in w) or all(b in bodies[20:] for b in w)


async def test_equal_prompts_keep_their_order_and_models_are_apart() -> None:
    bodies = [chat("s", "same", model=m) for m in ("b", "a", "b")]
    out = [b async for b in in_prefix_order(aiter(bodies), key=prompt_key, size=lambda b: 1)]
    assert out == [bodies[1], bodies[0], bodies[2]]


def test_prompt_key_reads_every_endpoint_shape() -> None:
    assert "hello" in prompt_key({"model": "m", "prompt": "hello"})
    assert "doc" in prompt_key({"model": "m", "input": ["doc", "other"]})
    content = [{"type": "text", "text": "hi"}]
    parts = {"model": "m", "messages": [{"role": "user", "content": content}]}
    assert "hi" in prompt_key(parts)
    assert prompt_key({"model": "m"}).startswith("m")
