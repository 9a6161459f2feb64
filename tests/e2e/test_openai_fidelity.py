"""OpenAI's own codes and words (issue: speak OpenAI exactly), through the official SDK.

Each case is what OpenAI answers, as recorded in the wire contract: a bad line makes
a created batch fail with OpenAI's code; an unknown input file makes a created batch
fail at once; unknown objects and endpoints are refused in OpenAI's words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from harness import (
    BatchdProcess,
    StartBatchd,
    chat_line,
    create_batch,
    results,
    run_batch,
    upload,
    wait_batch,
)
from upstream_server import UpstreamServer


def failed_entries(client: openai.OpenAI, lines: Any, **kwargs: Any) -> list[dict[str, Any]]:
    b = wait_batch(client, create_batch(client, lines, **kwargs).id)
    assert b.status == "failed", b
    assert b.errors is not None
    return [e.model_dump() for e in b.errors.data]


def test_stream_true_is_streaming_unsupported(batchd: BatchdProcess) -> None:
    line = chat_line(1)
    line["body"]["stream"] = True
    [e] = failed_entries(batchd.client, [chat_line(0), line])
    assert (e["code"], e["param"], e["line"]) == ("streaming_unsupported", "body.stream", 2)


def test_foreign_url_is_invalid_url(batchd: BatchdProcess) -> None:
    [e] = failed_entries(batchd.client, [chat_line(0), {**chat_line(1), "url": "/v1/embeddings"}])
    assert (e["code"], e["param"], e["line"]) == ("invalid_url", "url", 2)
    assert e["message"] == "The URL provided for this request does not match the batch endpoint."


@pytest.mark.parametrize(
    ("endpoint", "body", "param"),
    [
        ("/v1/chat/completions", {"model": "test-model"}, "body.messages"),
        ("/v1/completions", {"model": "test-model"}, "body.prompt"),
        ("/v1/embeddings", {"model": "test-model"}, "body.input"),
        ("/v1/moderations", {"model": "test-model"}, "body.input"),
        ("/v1/responses", {"model": "test-model"}, "body.input"),
        ("/v1/rerank", {"model": "test-model", "query": "q"}, "body.documents"),
    ],
)
def test_missing_body_fields(
    batchd: BatchdProcess, endpoint: str, body: dict[str, Any], param: str
) -> None:
    line = {"custom_id": "a", "method": "POST", "url": endpoint, "body": body}
    [e] = failed_entries(batchd.client, [line], endpoint=endpoint)
    assert (e["code"], e["param"], e["line"]) == ("missing_required_parameter", param, 1)


def test_unserved_model_fails_validation(
    start_batchd: StartBatchd, upstream: UpstreamServer, tmp_path: Path
) -> None:
    config = tmp_path / "batchd.toml"
    config.write_text(
        f'[[backends]]\nname = "one"\nbase_url = "{upstream.base_url}"\n'
        'models = ["test-model"]\n'
    )
    server = start_batchd(args=["--config", str(config)])
    c = server.client
    entries = failed_entries(c, [chat_line(0), chat_line(1, model="gpt-nothing")])
    assert [(e["code"], e["line"]) for e in entries] == [("model_not_found", 2)]
    entries = failed_entries(c, [chat_line(i, model="gpt-nothing") for i in range(3)])
    assert [(e["code"], e["param"], e["line"]) for e in entries] == [
        ("model_not_found", "body.model", n) for n in (1, 2, 3)
    ]
    assert entries[0]["message"] == (
        "The provided model 'gpt-nothing' is not supported by the Batch API."
    )
    assert upstream.stats.total == 0  # nothing was sent
    # The routed model still runs.
    ok = run_batch(c, [chat_line(i) for i in range(2)])
    assert ok.status == "completed" and ok.request_counts.completed == 2


def test_with_upstream_every_model_is_routable(batchd: BatchdProcess) -> None:
    b = run_batch(batchd.client, [chat_line(i, model="anything-at-all") for i in range(2)])
    assert b.status == "completed" and b.request_counts.completed == 2


def test_unknown_input_file_gives_a_failed_batch(start_batchd: StartBatchd, upstream: Any) -> None:
    server = start_batchd(
        upstream=upstream.base_url, args=["--api-key", "ka", "--api-key", "kb"], api_key="ka"
    )
    a, b = server.make_client(api_key="ka"), server.make_client(api_key="kb")
    theirs = upload(b, [chat_line(0)])
    verdicts = []
    for file_id in (theirs.id, "file-doesnotexist0000", "not even an id"):
        batch = a.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.status == "failed" and batch.failed_at is not None
        assert batch.input_file_id == file_id
        assert batch.errors is not None
        [e] = [x.model_dump() for x in batch.errors.data]
        assert e == {
            "code": "invalid_request",
            "param": "file_id",
            "line": None,
            "message": f"Cannot find file {file_id}, or this API key does not have access to it.",
        }
        again = a.batches.retrieve(batch.id)
        assert again.status == "failed" and again.output_file_id is None
        verdicts.append(e["message"].replace(file_id, "<id>"))
    # Another key's file and a file that does not exist look the same.
    assert len(set(verdicts)) == 1
    assert upstream.stats.total == 0


def test_unknown_batch_in_openai_words(batchd: BatchdProcess) -> None:
    for call in (batchd.client.batches.retrieve, batchd.client.batches.cancel):
        with pytest.raises(openai.NotFoundError) as info:
            call("batch_0123456789abcdef")
        assert info.value.status_code == 404
        body: Any = info.value.body
        assert body["message"] == "No batch found with id 'batch_0123456789abcdef'."
    with pytest.raises(openai.NotFoundError) as info:
        batchd.client.files.retrieve("file-0123456789abcdef")
    assert "No such File object: file-0123456789abcdef" in str(info.value)


def test_unknown_endpoint_lists_supported_values(batchd: BatchdProcess) -> None:
    f = upload(batchd.client, [chat_line(0)])
    with pytest.raises(openai.BadRequestError) as info:
        batchd.client.batches.create(
            input_file_id=f.id,
            endpoint="/v1/nope",  # type: ignore[arg-type]
            completion_window="24h",
        )
    body: Any = info.value.body
    assert body["param"] == "endpoint"
    assert "Supported values" in body["message"]
    for endpoint in ("/v1/chat/completions", "/v1/images/generations", "/v1/rerank"):
        assert endpoint in body["message"]


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("/v1/images/generations", {"model": "gpt-image-1", "prompt": "a cat"}),
        ("/v1/images/edits", {"model": "gpt-image-1", "prompt": "hat", "images": [{"x": 1}]}),
        ("/v1/score", {"model": "bge-reranker", "text_1": "q", "text_2": ["a", "b"]}),
        ("/v1/rerank", {"model": "bge-reranker", "query": "q", "documents": ["a", "b"]}),
    ],
)
def test_new_endpoints_pass_through(
    batchd: BatchdProcess, upstream: UpstreamServer, endpoint: str, body: dict[str, Any]
) -> None:
    lines = [
        {"custom_id": f"c{i}", "method": "POST", "url": endpoint, "body": body} for i in range(3)
    ]
    b = run_batch(batchd.client, lines, endpoint=endpoint)
    assert b.status == "completed" and b.request_counts.completed == 3, b
    out, err = results(batchd.client, b)
    assert err == [] and {o["custom_id"] for o in out} == {"c0", "c1", "c2"}
    assert upstream.stats.paths[endpoint] == 3


def test_models_list_their_endpoints(
    start_batchd: StartBatchd, upstream: UpstreamServer, tmp_path: Path
) -> None:
    config = tmp_path / "batchd.toml"
    config.write_text(
        f'[[backends]]\nname = "one"\nbase_url = "{upstream.base_url}"\nmodels = ["m-1"]\n'
    )
    server = start_batchd(args=["--config", str(config)])
    [model] = [m for m in server.client.models.list().data if m.id == "m-1"]
    endpoints: Any = model.model_extra and model.model_extra.get("endpoints")
    assert "/v1/chat/completions" in endpoints and "/v1/score" in endpoints
    assert server.client.models.retrieve("m-1").model_extra == {"endpoints": endpoints}
