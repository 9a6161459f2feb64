"""Embeddings through LocalBackend.send, with the real int8 all-MiniLM-L6-v2."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from local.util import EMBEDDING_MODEL, send

pytestmark = pytest.mark.local

EMB = "/v1/embeddings"


def embed_body(texts: str | list[str], **extra: Any) -> dict[str, Any]:
    return {"model": EMBEDDING_MODEL, "input": texts, **extra}


def vectors(answer: dict[str, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([d["embedding"] for d in answer["data"]], dtype=np.float64)


def test_shape_norm_and_similarity(backend: Any) -> None:
    texts = [
        "A man is playing a guitar on stage.",
        "Someone performs a song with an acoustic guitar.",
        "The central bank raised interest rates again.",
        "Inflation pushed the Federal Reserve to tighten monetary policy.",
    ]
    status, answer = asyncio.run(send(backend, EMB, embed_body(texts)))
    assert status == 200, answer
    assert answer["object"] == "list" and answer["model"] == EMBEDDING_MODEL
    assert [d["index"] for d in answer["data"]] == [0, 1, 2, 3]
    assert all(d["object"] == "embedding" for d in answer["data"])
    v = vectors(answer)
    assert v.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[0, 3] + 0.2
    assert sim[2, 3] > sim[2, 0] + 0.2 and sim[2, 3] > sim[2, 1] + 0.2
    usage = answer["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] > 20


def test_batched_equals_alone(backend: Any) -> None:
    """Padding in a shared batch does not change a text's embedding."""
    texts = ["short", "a somewhat longer sentence about the weather in spring", "mid length text"]

    async def main() -> tuple[Any, list[Any]]:
        together = await send(backend, EMB, embed_body(texts))
        alone = await asyncio.gather(*(send(backend, EMB, embed_body(t)) for t in texts))
        return together, alone

    (status, together), alone = asyncio.run(main())
    assert status == 200
    for i, (s, a) in enumerate(alone):
        assert s == 200
        np.testing.assert_allclose(vectors(together)[i], vectors(a)[0], atol=1e-5)


def test_base64_round_trip(backend: Any) -> None:
    async def main() -> tuple[Any, Any]:
        return await asyncio.gather(
            send(backend, EMB, embed_body(["hello world", "bonjour"])),
            send(backend, EMB, embed_body(["hello world", "bonjour"], encoding_format="base64")),
        )

    (s1, floats), (s2, b64) = asyncio.run(main())
    assert s1 == 200 and s2 == 200
    for f, b in zip(floats["data"], b64["data"], strict=True):
        assert isinstance(b["embedding"], str)
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert decoded.shape == (384,)
        np.testing.assert_allclose(decoded, np.array(f["embedding"], dtype=np.float32), atol=1e-6)


def test_usage_and_truncation(backend: Any) -> None:
    status, answer = asyncio.run(send(backend, EMB, embed_body("hello world")))
    assert status == 200 and answer["usage"]["prompt_tokens"] == 2  # [CLS]/[SEP] not counted
    long_text = " ".join(["word"] * 2000)
    status, answer = asyncio.run(send(backend, EMB, embed_body(long_text, dimensions=384)))
    assert status == 200
    assert answer["usage"]["prompt_tokens"] == 254  # 256 with [CLS] and [SEP]


def test_many_concurrent_requests(backend: Any) -> None:
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(300)]

    async def main() -> list[Any]:
        return await asyncio.gather(*(send(backend, EMB, embed_body(t)) for t in texts))

    results = asyncio.run(main())
    assert all(s == 200 for s, _ in results)
    assert len({a["data"][0]["embedding"][0] for _, a in results}) > 250


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (embed_body([1, 2, 3]), "input"),
        (embed_body([[1, 2], [3]]), "input"),
        (embed_body(""), "input"),
        (embed_body([]), "input"),
        (embed_body("x", dimensions=256), "dimensions"),
        (embed_body("x", encoding_format="int8"), "encoding_format"),
        (embed_body("x", extra=1), "extra"),
        ({"input": "x"}, "model"),
    ],
)
def test_bad_requests(backend: Any, body: dict[str, Any], param: str) -> None:
    status, answer = asyncio.run(send(backend, EMB, body))
    assert status == 400, answer
    assert answer["error"]["param"] == param


def test_unknown_model(backend: Any) -> None:
    status, answer = asyncio.run(
        send(backend, EMB, {"model": "text-embedding-3-small", "input": "x"})
    )
    assert status == 404 and answer["error"]["code"] == "model_not_found"
