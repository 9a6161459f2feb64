"""The seed tutorial's raw-HTTP client (``requests``) runs unchanged against batchd."""

from __future__ import annotations

import json

import pytest

from harness import BatchdProcess
from upstream_server import UpstreamServer

pytest.importorskip("requests")


def test_seed_tutorial_client_end_to_end(
    batchd: BatchdProcess, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from e2e import seed_client

    monkeypatch.setattr(seed_client, "BASE_URL", batchd.base_url)
    prompts = [
        "Summarize what gradient descent does in one sentence.",
        "Explain the difference between L1 and L2 regularization.",
        "What is the bias-variance tradeoff?",
    ]
    # The tutorial's own pipeline, step by step (its __main__ block, with a quicker poll).
    jsonl = seed_client.create_batch_jsonl(prompts)
    file_id = seed_client.upload_file(jsonl)
    batch_id = seed_client.create_batch(file_id, desc="My batch job")
    batch = seed_client.wait_for_batch(batch_id, interval=0.2, max_wait=60)
    assert batch is not None and batch["status"] == "completed"
    assert batch["metadata"] == {"description": "My batch job"}
    got = seed_client.download_results(batch)
    assert len(got) == 3
    system = "You are a helpful assistant."
    for i, prompt in enumerate(prompts):
        r = got[f"req-{i + 1:05d}"]
        assert r["content"] == f"echo: {system} {prompt}"
        words = len(f"{system} {prompt}".split())
        assert r["tokens"] == 2 * words + 1
    # The body the tutorial wrote reached the model server untouched.
    assert upstream.stats.total == 3
    assert json.loads(jsonl.split("\n")[0])["body"]["temperature"] == 0.7
