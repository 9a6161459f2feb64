"""The ``validating`` phase, one test per error code, plus create-time refusals.

A file with bad lines is accepted by ``POST /v1/batches``; the batch then ends
``failed`` with ``errors.data`` entries ``{code, line, param, message}``. Against the
app in this process (tests/inproc.py), through the official SDK.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from harness import chat_line, create_batch, results, upload, wait_batch
from inproc import InProcessBatchd, StartApi
from upstream_server import UpstreamServer

MAX_TASKS = 5
MAX_ERRORS = 3


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: UpstreamServer
) -> Iterator[InProcessBatchd]:
    app = InProcessBatchd(
        tmp_path_factory.mktemp("validation") / "data",
        upstream=upstream_server.base_url,
        env={
            "BATCHD_MAX_TASKS_PER_BATCH": str(MAX_TASKS),
            "BATCHD_MAX_VALIDATION_ERRORS": str(MAX_ERRORS),
        },
    ).start()
    yield app
    app.stop()


def failed_errors(server: InProcessBatchd, lines: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Run a batch that must fail validation; its error entries."""
    c = server.client
    b = wait_batch(c, create_batch(c, lines, **kwargs).id)
    assert b.status == "failed", b
    assert b.failed_at is not None
    assert b.in_progress_at is None
    assert b.output_file_id is None and b.error_file_id is None
    assert b.errors is not None and b.errors.object == "list"
    entries = [e.model_dump() for e in b.errors.data]
    for e in entries:
        assert set(e) == {"code", "line", "param", "message"}
        assert e["message"]
    return entries


def only(entries: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(entries) == 1, entries
    return entries[0]


def good(i: int) -> dict[str, Any]:
    return chat_line(i)


def test_invalid_json_line(server: InProcessBatchd) -> None:
    entries = failed_errors(server, [good(1), "{not json", "[1, 2]", '"a string"', good(5)])
    assert [(e["code"], e["line"], e["param"]) for e in entries] == [
        ("invalid_json_line", 2, None),
        ("invalid_json_line", 3, None),  # valid JSON, but not an object
        ("invalid_json_line", 4, None),
    ]


@pytest.mark.parametrize("param", ["custom_id", "method", "url", "body", "body.model"])
def test_missing_required_parameter(server: InProcessBatchd, param: str) -> None:
    bad = good(2)
    if param == "body.model":
        del bad["body"]["model"]
    else:
        del bad[param]
    e = only(failed_errors(server, [good(1), bad]))
    assert (e["code"], e["line"], e["param"]) == ("missing_required_parameter", 2, param)


@pytest.mark.parametrize(
    ("param", "value"),
    [("custom_id", 7), ("method", ["POST"]), ("url", 1), ("body", "x"), ("body.model", 3)],
)
def test_invalid_type(server: InProcessBatchd, param: str, value: Any) -> None:
    bad = good(1)
    if param == "body.model":
        bad["body"]["model"] = value
    else:
        bad[param] = value
    e = only(failed_errors(server, [bad]))
    assert (e["code"], e["line"], e["param"]) == ("invalid_type", 1, param)


@pytest.mark.parametrize(
    ("param", "change"),
    [
        ("method", {"method": "GET"}),
        ("custom_id", {"custom_id": ""}),
    ],
)
def test_invalid_value(server: InProcessBatchd, param: str, change: dict[str, Any]) -> None:
    e = only(failed_errors(server, [good(1), good(2), {**good(3), **change}]))
    assert (e["code"], e["line"], e["param"]) == ("invalid_value", 3, param)


@pytest.mark.parametrize(
    "url",
    [
        "/v1/embeddings",
        "https://evil.example.com/v1/chat/completions",
        "//evil.example.com/v1/chat/completions",
        "/v1/chat/completions/../../admin",
    ],
)
def test_invalid_url(server: InProcessBatchd, url: str) -> None:
    e = only(failed_errors(server, [good(1), {**good(2), "url": url}]))
    assert (e["code"], e["line"], e["param"]) == ("invalid_url", 2, "url")


def test_streaming_unsupported(server: InProcessBatchd) -> None:
    line = {**good(3), "body": {"model": "test-model", "messages": [], "stream": True}}
    e = only(failed_errors(server, [good(1), good(2), line]))
    assert (e["code"], e["line"], e["param"]) == ("streaming_unsupported", 3, "body.stream")


def test_model_mismatch(server: InProcessBatchd) -> None:
    e = only(failed_errors(server, [good(1), chat_line(2, model="other-model")]))
    assert (e["code"], e["line"], e["param"]) == ("model_mismatch", 2, "body.model")


def test_duplicate_custom_id(server: InProcessBatchd) -> None:
    e = only(failed_errors(server, [good(1), good(2), good(1)]))
    assert (e["code"], e["line"], e["param"]) == ("duplicate_custom_id", 3, "custom_id")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\r\n"])
def test_empty_file(server: InProcessBatchd, content: bytes) -> None:
    e = only(failed_errors(server, content))
    assert e["code"] == "empty_file"
    assert e["line"] is None


def test_too_many_tasks(server: InProcessBatchd) -> None:
    c = server.client
    ok = wait_batch(c, create_batch(c, [good(i) for i in range(MAX_TASKS)]).id)
    assert ok.status == "completed"  # exactly at the limit is fine
    e = only(failed_errors(server, [good(i) for i in range(MAX_TASKS + 1)]))
    assert e["code"] == "too_many_tasks"
    assert e["line"] is None


def test_too_many_errors(server: InProcessBatchd) -> None:
    lines = [good(1), "{bad", "{bad", "{bad", "{bad"]
    entries = failed_errors(server, lines)
    assert [(e["code"], e["line"]) for e in entries] == [
        ("invalid_json_line", 2),
        ("invalid_json_line", 3),
        ("invalid_json_line", 4),
        ("too_many_errors", None),
    ]
    assert entries[-1]["message"].startswith("1 more")


def test_line_too_long(start_api: StartApi, upstream: UpstreamServer) -> None:
    """A line longer than the largest accepted line (the batch file limit)."""
    server = start_api(upstream=upstream.base_url)
    long_line = chat_line(2, text="x" * 3000)
    f = upload(server.client, [good(1), long_line, good(3)])
    server.terminate()
    # The same file, validated by a server whose limit has since been lowered.
    server.restart(env={"BATCHD_MAX_BATCH_FILE_BYTES": "2000"})
    c = server.client
    b = c.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    b = wait_batch(c, b.id)
    assert b.status == "failed"
    assert b.errors is not None
    assert [(e.code, e.line) for e in b.errors.data] == [("line_too_long", 2)]


def test_blank_lines_crlf_and_bom_are_fine(server: InProcessBatchd) -> None:
    c = server.client
    body = b"\xef\xbb\xbf" + json.dumps(good(1)).encode() + b"\r\n\r\n"
    body += json.dumps(good(2)).encode() + b"\r\n   \n" + json.dumps(good(3)).encode()  # no EOL
    b = wait_batch(c, create_batch(c, body).id)
    assert b.status == "completed", b.errors
    assert b.request_counts.total == 3  # type: ignore[union-attr]
    out, err = results(c, b)
    assert sorted(line["custom_id"] for line in out) == ["r1", "r2", "r3"]
    assert err == []


def test_line_numbers_count_blank_lines(server: InProcessBatchd) -> None:
    body = json.dumps(good(1)).encode() + b"\n\n\n{oops\n"
    e = only(failed_errors(server, body))
    assert (e["code"], e["line"]) == ("invalid_json_line", 4)


def test_errors_on_many_lines_are_all_reported(server: InProcessBatchd) -> None:
    lines = [good(1), {**good(2), "method": "PUT"}, chat_line(3, model="m2")]
    entries = failed_errors(server, lines)
    assert [(e["code"], e["line"]) for e in entries] == [
        ("invalid_value", 2),
        ("model_mismatch", 3),
    ]


# ------------------------------------------------------------ create-time refusals


def test_create_from_unknown_file_fails_at_once(server: InProcessBatchd) -> None:
    b = server.client.batches.create(
        input_file_id="file-000000000000",
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    assert b.status == "failed" and b.errors is not None
    assert [(e.code, e.param) for e in b.errors.data] == [("invalid_request", "file_id")]


def test_create_from_non_batch_file_is_400(server: InProcessBatchd) -> None:
    c = server.client
    f = c.files.create(file=("in.jsonl", b"{}\n"), purpose="user_data")
    with pytest.raises(openai.BadRequestError) as err:
        c.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert err.value.body["param"] == "input_file_id"  # type: ignore[index]


@pytest.mark.parametrize(
    ("endpoint", "window", "param"),
    [
        ("/v1/audio/speech", "24h", "endpoint"),
        ("/v1/chat/completion", "24h", "endpoint"),
        ("/v1/chat/completions", "1h", "completion_window"),
        ("/v1/chat/completions", "2s", "completion_window"),
        ("/v1/chat/completions", "soon", "completion_window"),
    ],
)
def test_create_with_bad_endpoint_or_window_is_400(
    server: InProcessBatchd, endpoint: str, window: str, param: str
) -> None:
    c = server.client
    f = upload(c, [good(1)])
    with pytest.raises(openai.BadRequestError) as err:
        c.batches.create(
            input_file_id=f.id,
            endpoint=endpoint,  # type: ignore[arg-type]
            completion_window=window,  # type: ignore[arg-type]
        )
    assert err.value.body["param"] == param  # type: ignore[index]
