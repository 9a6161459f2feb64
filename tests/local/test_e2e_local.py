"""The embedded models end to end: a real batchd server with no upstream, driven by
the official ``openai`` SDK, answering from the CPU models shipped in packages."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import BatchdProcess, by_custom_id, results, run_batch

pytestmark = pytest.mark.local

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    proc = BatchdProcess(
        tmp_path_factory.mktemp("local") / "data", env={"BATCHD_LOCAL_ENABLED": "true"}
    )
    proc.start(timeout=60)
    yield proc
    proc.stop()


def line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def test_models_are_listed(server: BatchdProcess) -> None:
    ids = {m.id for m in server.client.models.list()}
    assert {CHAT, EMBED, "omni-moderation-latest"} <= ids


def test_chat_batch(server: BatchdProcess) -> None:
    lines = [
        line(f"c{i}", "/v1/chat/completions", {
            "model": CHAT,
            "messages": [{"role": "system", "content": "Answer in one word."},
                         {"role": "user", "content": f"Name a colour. ({i})"}],
            "max_tokens": 8, "temperature": 0,
        })
        for i in range(6)
    ]  # fmt: skip
    batch = run_batch(server.client, lines, timeout=300)
    assert batch.status == "completed", batch
    out, err = results(server.client, batch)
    assert err == []
    got = by_custom_id(out)
    assert set(got) == {f"c{i}" for i in range(6)}
    for answer in got.values():
        body = answer["response"]["body"]
        assert answer["response"]["status_code"] == 200
        assert body["object"] == "chat.completion" and body["model"] == CHAT
        choice = body["choices"][0]
        assert choice["message"]["role"] == "assistant"
        assert choice["finish_reason"] in ("stop", "length")
        usage = body["usage"]
        assert 0 < usage["completion_tokens"] <= 8
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert batch.usage.output_tokens == sum(
        a["response"]["body"]["usage"]["completion_tokens"] for a in got.values()
    )


def test_json_schema_batch_answers_parse_and_match(server: BatchdProcess) -> None:
    schema = {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "score": {"type": "integer"},
        },
        "required": ["sentiment", "score"],
        "additionalProperties": False,
    }
    reviews = ["Great product, works perfectly.", "Broke after a day.", "It is a cable."]
    lines = [
        line(f"s{i}", "/v1/chat/completions", {
            "model": CHAT,
            "messages": [{"role": "user", "content": f"Classify this review: {text}"}],
            "max_tokens": 48, "temperature": 0,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "review", "schema": schema,
                                                "strict": True}},
        })
        for i, text in enumerate(reviews)
    ]  # fmt: skip
    batch = run_batch(server.client, lines, timeout=300)
    assert batch.status == "completed", batch
    out, err = results(server.client, batch)
    assert err == [] and len(out) == 3
    for answer in out:
        content = answer["response"]["body"]["choices"][0]["message"]["content"]
        parsed = json.loads(content)
        assert set(parsed) == {"sentiment", "score"}
        assert parsed["sentiment"] in ("positive", "negative", "neutral")
        assert isinstance(parsed["score"], int)


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_batch_related_sentences_are_closer(server: BatchdProcess) -> None:
    texts = {
        "cat1": "The cat sat on the mat.",
        "cat2": "A kitten is sitting on a rug.",
        "stock": "The central bank raised interest rates again.",
    }
    lines = [line(k, "/v1/embeddings", {"model": EMBED, "input": v}) for k, v in texts.items()]
    batch = run_batch(server.client, lines, endpoint="/v1/embeddings", timeout=120)
    assert batch.status == "completed", batch
    out, _ = results(server.client, batch)
    vec = {a["custom_id"]: a["response"]["body"]["data"][0]["embedding"] for a in out}
    assert all(len(v) == 384 for v in vec.values())
    assert abs(sum(x * x for x in vec["cat1"]) - 1.0) < 1e-3  # L2-normalised
    assert _cos(vec["cat1"], vec["cat2"]) > _cos(vec["cat1"], vec["stock"]) + 0.2


def test_moderation_batch(server: BatchdProcess) -> None:
    lines = [
        line("clean", "/v1/moderations", {"input": "I love sunny days in the park."}),
        line("rude", "/v1/moderations",
             {"model": "omni-moderation-latest", "input": "you are a fucking idiot"}),
    ]  # fmt: skip
    # One file, one model: give both lines the same explicit model.
    lines[0]["body"]["model"] = "omni-moderation-latest"
    batch = run_batch(server.client, lines, endpoint="/v1/moderations", timeout=120)
    assert batch.status == "completed", batch
    got = by_custom_id(results(server.client, batch)[0])
    clean = got["clean"]["response"]["body"]["results"][0]
    rude = got["rude"]["response"]["body"]["results"][0]
    assert clean["flagged"] is False
    assert rude["flagged"] is True
    assert "harassment" in rude["categories"] and "category_scores" in rude


def test_unsupported_request_is_a_clear_error_line(server: BatchdProcess) -> None:
    lines = [line("bad", "/v1/chat/completions",
                  {"model": CHAT, "messages": "not a list", "max_tokens": 4})]  # fmt: skip
    batch = run_batch(server.client, lines, timeout=120)
    assert batch.status == "completed"
    out, err = results(server.client, batch)
    assert out == [] and batch.output_file_id is None
    assert err[0]["response"]["status_code"] == 400
    assert err[0]["response"]["body"]["error"]["message"]


def test_demo_command_runs_the_sample_batches(tmp_path: Path) -> None:
    """The README's first command, minus the install step: ``batchd demo``."""
    out_dir = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "batchd", "demo", "--data-dir", str(tmp_path / "data"),
         "--output", str(out_dir)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reviews = (out_dir / "reviews.results.jsonl").read_text().splitlines()
    embeds = (out_dir / "embed.results.jsonl").read_text().splitlines()
    assert len(reviews) == 100 and len(embeds) == 100
    assert "Results are in" in proc.stdout


def test_one_engine_process_loads_and_runs_the_embedded_models(
    tmp_path: Path,
) -> None:
    # Two engine children, each running one shard at a time, and a batch cut into
    # four shards (of 8 lines): the second child would take some, loading a second copy of the
    # model, whose requests would then no longer batch with the first's.
    proc = BatchdProcess(
        tmp_path / "data",
        env={
            "BATCHD_LOCAL_ENABLED": "true",
            "BATCHD_MAX_SHARDS": "1",
            "BATCHD_SHARD_SIZE": "8",
            "BATCHD_POLL_INTERVAL": "0.05",
        },
        args=["--engine-processes", "2"],
    )
    proc.start(timeout=60)
    try:
        lines = [
            line(f"c{i}", "/v1/chat/completions", {
                "model": CHAT, "messages": [{"role": "user", "content": f"Count to {i}."}],
                "max_tokens": 8, "temperature": 0,
            })
            for i in range(32)
        ]  # fmt: skip
        batch = run_batch(proc.client, lines, timeout=300)
        assert batch.status == "completed" and batch.request_counts.completed == 32, batch
        loads = [x for x in proc.logs().splitlines() if f"{CHAT}: loaded in" in x]
        assert len(loads) == 1, loads
    finally:
        proc.stop()
