"""Running requests: retries, backoff, Retry-After, timeouts, concurrency, endpoints, usage.

Retries and the ``--upstream-api-key`` flag are checked through real ``batchd serve``
processes; the other cases run against the app in this process (tests/inproc.py),
whose worker sends to the same real upstream over HTTP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import (
    BatchdProcess,
    StartBatchd,
    by_custom_id,
    chat_line,
    create_batch,
    results,
    run_batch,
    wait_batch,
    wait_for,
)
from inproc import InProcessBatchd, StartApi
from upstream_server import Faults, UpstreamServer


def texts(n: int) -> list[str]:
    return [f"hello {i}" for i in range(n)]


def test_5xx_is_retried_until_success(batchd: BatchdProcess, upstream: UpstreamServer) -> None:
    upstream.reset(Faults(fail_first=2, fail_status=503))
    b = run_batch(batchd.client, [chat_line(i) for i in range(10)])
    assert b.status == "completed"
    assert b.request_counts.model_dump() == {"total": 10, "completed": 10, "failed": 0}
    assert b.error_file_id is None
    assert all(upstream.stats.attempts[t] == 3 for t in texts(10))
    out, _ = results(batchd.client, b)
    assert {line["response"]["status_code"] for line in out} == {200}


def test_retries_stop_at_max_attempts(start_api: StartApi, upstream: UpstreamServer) -> None:
    upstream.reset(Faults(fail_first=100, fail_status=500))
    server = start_api(upstream=upstream.base_url, env={"BATCHD_MAX_ATTEMPTS": "3"})
    b = run_batch(server.client, [chat_line(i) for i in range(4)])
    assert b.status == "completed"  # a batch whose every request failed still completes
    assert b.output_file_id is None
    assert b.request_counts.model_dump() == {"total": 4, "completed": 0, "failed": 4}
    assert all(upstream.stats.attempts[t] == 3 for t in texts(4))
    _, err = results(server.client, b)
    assert len(by_custom_id(err)) == 4
    for line in err:
        assert line["response"]["status_code"] == 500
        assert line["response"]["body"]["error"]["message"] == "Injected failure"
        assert line["error"] is None


def test_429_honours_retry_after(start_api: StartApi, upstream: UpstreamServer) -> None:
    upstream.reset(Faults(fail_first=1, fail_status=429, retry_after=1.0))
    server = start_api(upstream=upstream.base_url, env={"BATCHD_RETRY_CAP": "5"})
    b = run_batch(server.client, [chat_line(i) for i in range(5)])
    assert b.status == "completed"
    assert b.request_counts.completed == 5
    for t in texts(5):
        first, second = upstream.stats.times[t]
        # BATCHD_RETRY_BASE is 0.02s: only the upstream's Retry-After explains this wait.
        assert second - first >= 0.95, (t, second - first)


def test_400_is_not_retried(api: InProcessBatchd, upstream: UpstreamServer) -> None:
    upstream.reset(Faults(reject_marker="REJECT"))
    lines = [chat_line(i, text=f"REJECT {i}" if i % 3 == 0 else None) for i in range(9)]
    b = run_batch(api.client, lines)
    assert b.status == "completed"
    assert b.request_counts.model_dump() == {"total": 9, "completed": 6, "failed": 3}
    out, err = results(api.client, b)
    assert sorted(line["custom_id"] for line in err) == ["r0", "r3", "r6"]
    assert len(out) == 6
    for line in err:
        assert line["error"] is None
        assert line["response"]["status_code"] == 400
        assert line["response"]["body"] == {
            "error": {
                "message": "Rejected by test upstream",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "content_rejected",
            }
        }
    for i in (0, 3, 6):
        assert upstream.stats.attempts[f"REJECT {i}"] == 1


def test_dropped_connections_are_retried(
    start_api: StartApi, upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(error_rate=0.4, error_kinds=("drop",), seed=7))
    server = start_api(upstream=upstream.base_url, env={"BATCHD_MAX_ATTEMPTS": "12"})
    b = run_batch(server.client, [chat_line(i) for i in range(30)])
    assert b.status == "completed"
    assert b.request_counts.model_dump() == {"total": 30, "completed": 30, "failed": 0}
    assert sum(upstream.stats.attempts.values()) > 30  # some connections were dropped
    assert all(upstream.stats.successes[t] == 1 for t in texts(30))


def test_timeouts_are_retried_then_reported(
    start_api: StartApi, upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(delay=1.5))
    server = start_api(
        upstream=upstream.base_url,
        env={"BATCHD_UPSTREAM_TIMEOUT": "0.3", "BATCHD_MAX_ATTEMPTS": "2"},
    )
    b = run_batch(server.client, [chat_line(i) for i in range(3)])
    assert b.status == "completed"
    assert b.output_file_id is None
    assert b.request_counts.failed == 3
    _, err = results(server.client, b)
    for line in err:
        assert line["response"] is None
        assert line["error"]["code"] == "timeout"
    assert all(upstream.stats.attempts[t] == 2 for t in texts(3))


def test_slow_answers_within_timeout_succeed_and_slower_ones_retry(
    start_api: StartApi, upstream: UpstreamServer
) -> None:
    # Every answer takes 0.2s (inside the 1s timeout); a third also stall for 3s (past it).
    upstream.reset(
        Faults(delay=0.2, error_rate=0.3, error_kinds=("slow",), slow_seconds=3.0, seed=3)
    )
    server = start_api(
        upstream=upstream.base_url,
        env={"BATCHD_UPSTREAM_TIMEOUT": "1.0", "BATCHD_MAX_ATTEMPTS": "10"},
    )
    b = run_batch(server.client, [chat_line(i) for i in range(12)])
    assert b.request_counts.model_dump() == {"total": 12, "completed": 12, "failed": 0}
    assert sum(upstream.stats.attempts.values()) > 12


def test_concurrency_is_bounded(start_api: StartApi, upstream: UpstreamServer) -> None:
    upstream.reset(Faults(delay=0.1))
    server = start_api(upstream=upstream.base_url, env={"BATCHD_UPSTREAM_CONCURRENCY": "3"})
    b = run_batch(server.client, [chat_line(i) for i in range(30)])
    assert b.request_counts.completed == 30
    assert 2 <= upstream.stats.peak_inflight <= 3


def test_request_counts_are_live(start_api: StartApi, upstream: UpstreamServer) -> None:
    upstream.reset(Faults(delay=0.3))
    server = start_api(upstream=upstream.base_url, env={"BATCHD_UPSTREAM_CONCURRENCY": "2"})
    c = server.client
    b = create_batch(c, [chat_line(i) for i in range(12)])

    def midway() -> Any:
        got = c.batches.retrieve(b.id)
        counts = got.request_counts
        return got if got.status == "in_progress" and 0 < counts.completed < 12 else None

    seen = wait_for(midway, timeout=20, what="a partial count")
    assert seen.request_counts.total == 12
    assert seen.in_progress_at is not None and seen.completed_at is None
    done = wait_batch(c, b.id)
    assert done.request_counts.model_dump() == {"total": 12, "completed": 12, "failed": 0}


def _chat(i: int) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": f"text {i}"}]}


ENDPOINT_BODIES: dict[str, Any] = {
    "/v1/chat/completions": _chat,
    "/v1/completions": lambda i: {"model": "m", "prompt": f"text {i}"},
    "/v1/embeddings": lambda i: {"model": "m", "input": f"text {i}"},
    "/v1/moderations": lambda i: {"model": "m", "input": f"text {i}"},
    "/v1/responses": lambda i: {"model": "m", "input": f"text {i}"},
}


@pytest.mark.parametrize("endpoint", list(ENDPOINT_BODIES))
def test_every_endpoint_passes_through(
    api: InProcessBatchd, upstream: UpstreamServer, endpoint: str
) -> None:
    lines = [
        {
            "custom_id": f"c{i}",
            "method": "POST",
            "url": endpoint,
            "body": ENDPOINT_BODIES[endpoint](i),
        }
        for i in range(3)
    ]
    b = run_batch(api.client, lines, endpoint=endpoint)
    assert b.status == "completed"
    assert b.endpoint == endpoint
    assert b.request_counts.completed == 3
    assert upstream.stats.paths == {endpoint: 3}
    out = by_custom_id(results(api.client, b)[0])
    for i in range(3):
        body = out[f"c{i}"]["response"]["body"]
        assert body["model"] == "m"
        text = json.dumps(body)
        if endpoint == "/v1/embeddings":
            assert body["object"] == "list" and len(body["data"][0]["embedding"]) == 8
        elif endpoint == "/v1/moderations":
            assert body["results"][0]["flagged"] is False
        else:
            assert f"echo: text {i}" in text


def test_moderations_without_model(
    start_api: StartApi, upstream: UpstreamServer, tmp_path: Path
) -> None:
    """A moderation line may leave out the model (as OpenAI allows): it is routed as
    omni-moderation-latest, the default. Only that name routes anywhere here, and the
    upstream answers with whatever model it was sent, inventing none."""
    config = tmp_path / "batchd.toml"
    config.write_text(
        f"""
[[backends]]
name = "moderator"
base_url = "{upstream.base_url}"
models = ["omni-moderation-latest"]
"""
    )
    server = start_api(config=config)
    lines = [
        {"custom_id": "m1", "method": "POST", "url": "/v1/moderations", "body": {"input": "hi"}}
    ]
    b = run_batch(server.client, lines, endpoint="/v1/moderations")
    assert b.status == "completed" and b.request_counts.completed == 1, b
    assert b.model == "omni-moderation-latest"
    [sent] = upstream.stats.bodies["/v1/moderations"]
    assert sent["input"] == "hi"
    assert sent.get("model") in (None, "omni-moderation-latest")
    [line] = results(server.client, b)[0]
    assert line["response"]["body"]["model"] == sent.get("model")
    assert line["response"]["body"]["results"][0]["flagged"] is False


def test_usage_is_summed(api: InProcessBatchd) -> None:
    # The test upstream reports prompt_tokens = words, completion_tokens = words + 1.
    words = [1, 2, 5, 3]
    lines = [chat_line(i, text=" ".join(["w"] * n)) for i, n in enumerate(words)]
    b = run_batch(api.client, lines)
    u = b.usage
    assert u.input_tokens == sum(words)
    assert u.output_tokens == sum(n + 1 for n in words)
    assert u.total_tokens == sum(2 * n + 1 for n in words)
    assert u.input_tokens_details.cached_tokens == 0
    assert u.output_tokens_details.reasoning_tokens == 0


def test_usage_of_responses_endpoint(api: InProcessBatchd) -> None:
    lines = [
        {
            "custom_id": f"c{i}",
            "method": "POST",
            "url": "/v1/responses",
            "body": {"model": "m", "input": " ".join(["w"] * (i + 1))},
        }
        for i in range(3)
    ]
    b = run_batch(api.client, lines, endpoint="/v1/responses")
    assert b.usage.input_tokens == 1 + 2 + 3
    assert b.usage.output_tokens == 2 + 3 + 4
    assert b.usage.total_tokens == 3 + 5 + 7


def test_failed_requests_do_not_count_usage(
    api: InProcessBatchd, upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(reject_marker="REJECT"))
    b = run_batch(api.client, [chat_line(1, text="a b"), chat_line(2, text="REJECT c")])
    assert b.request_counts.model_dump() == {"total": 2, "completed": 1, "failed": 1}
    assert b.usage.input_tokens == 2
    assert b.usage.total_tokens == 5


def test_upstream_api_key_is_sent(start_batchd: StartBatchd, upstream: UpstreamServer) -> None:
    server = start_batchd(upstream=upstream.base_url, args=["--upstream-api-key", "sk-upstream"])
    b = run_batch(server.client, [chat_line(1)])
    assert b.request_counts.completed == 1
    assert upstream.stats.auth == {"Bearer sk-upstream": 1}


def test_two_batches_run_side_by_side(api: InProcessBatchd, upstream: UpstreamServer) -> None:
    upstream.reset(Faults(delay=0.02))
    c = api.client
    first = create_batch(c, [chat_line(f"a{i}") for i in range(40)])
    second = create_batch(c, [chat_line(f"b{i}") for i in range(40)])
    for b in (first, second):
        done = wait_batch(c, b.id)
        assert done.request_counts.completed == 40
        out, err = results(c, done)
        assert len(by_custom_id(out)) == 40 and err == []
    assert upstream.stats.total == 80
