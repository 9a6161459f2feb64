"""Moderations through LocalBackend.send (profanity_check)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("profanity_check")

from local.util import send

pytestmark = pytest.mark.local

MOD = "/v1/moderations"


def test_moderation_batch(backend: Any) -> None:
    inputs = [
        "You are a stupid idiot and everyone hates you.",
        "Have a wonderful day!",
        {"type": "text", "text": "Thanks for the quick delivery."},
    ]

    async def main() -> list[Any]:
        return await asyncio.gather(
            send(backend, MOD, {"model": "omni-moderation-latest", "input": inputs}),
            send(backend, MOD, {"model": "text-moderation-latest", "input": "shut up, moron"}),
        )

    (s1, omni), (s2, text) = asyncio.run(main())
    assert s1 == 200 and s2 == 200, (omni, text)
    assert omni["id"].startswith("modr-") and omni["model"] == "omni-moderation-latest"
    bad, nice, thanks = omni["results"]
    assert bad["flagged"] and bad["categories"]["harassment"]
    assert bad["category_scores"]["harassment"] > 0.5
    assert not nice["flagged"] and not thanks["flagged"]
    assert nice["category_scores"]["harassment"] < 0.5
    for result in omni["results"]:
        keys = set(result["categories"])
        assert {
            "harassment/threatening",
            "self-harm/intent",
            "sexual/minors",
            "illicit",
            "violence/graphic",
        } <= keys
        assert keys == set(result["category_scores"]) == set(result["category_applied_input_types"])
        # Only one category is really scored; the rest say so with 0.0 / false.
        assert all(v == 0.0 for k, v in result["category_scores"].items() if k != "harassment")
        assert not any(v for k, v in result["categories"].items() if k != "harassment")
    (only,) = text["results"]
    assert "illicit" not in only["categories"]
    assert "category_applied_input_types" not in only
    assert only["flagged"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (
            {
                "model": "omni-moderation-latest",
                "input": [{"type": "image_url", "image_url": {"url": "x"}}],
            },
            400,
        ),
        ({"model": "omni-moderation-latest", "input": 3}, 400),
        ({"model": "omni-moderation-latest"}, 400),
        ({"model": "moderation-9000", "input": "x"}, 404),
    ],
)
def test_bad_requests(backend: Any, body: dict[str, Any], status: int) -> None:
    got, answer = asyncio.run(send(backend, MOD, body))
    assert got == status, answer
    assert answer["error"]["message"]
