"""The bad-input corpus (tests/abuse/corpus.py), table-driven against one server.

Every malformed file uploads and ends as the batch status and error codes its
entry names; every refused upload or create call gets its HTTP status and error
code; and no request of the whole run is answered with a 5xx. Against the app in this
process (tests/inproc.py), where an unhandled error also raises in the test itself.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from abuse.corpus import (
    CREATE_FILE,
    EP,
    FILE_CASES,
    MAX_BATCH_FILE,
    MAX_ERRORS,
    MAX_TASKS,
    UNKNOWN_INPUT_FILES,
    UPLOAD_CASES,
    CreateCase,
    FileCase,
    UploadCase,
    create_cases,
)
from harness import TERMINAL, upload, wait_for
from inproc import InProcessBatchd
from upstream_server import UpstreamServer


def assert_no_5xx(server: InProcessBatchd) -> None:
    """From the server's own count of answers by status (``/metrics``)."""
    status, _, raw = server.http("GET", "/metrics")
    assert status == 200
    counted = re.findall(
        r'^batchd_http_requests_total\{[^}]*status="(\d+)"[^}]*\} (\S+)', raw.decode(), re.M
    )
    assert counted, "no HTTP request counts in /metrics"
    five = [(s, n) for s, n in counted if s.startswith("5") and float(n) > 0]
    assert not five, five


def multipart(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    boundary = "batchd-" + secrets.token_hex(8)
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    for filename, data in files:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(out)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: UpstreamServer
) -> Iterator[InProcessBatchd]:
    proc = InProcessBatchd(
        tmp_path_factory.mktemp("abuse") / "data",
        upstream=upstream_server.base_url,
        env={
            "BATCHD_MAX_TASKS_PER_BATCH": str(MAX_TASKS),
            "BATCHD_MAX_VALIDATION_ERRORS": str(MAX_ERRORS),
            "BATCHD_MAX_BATCH_FILE_BYTES": str(MAX_BATCH_FILE),
        },
    ).start()
    yield proc
    # No request of the whole module was answered with a 5xx, nor logged as one.
    assert_no_5xx(proc)
    proc.stop()
    assert "unhandled error" not in proc.logs()


@pytest.fixture(scope="module")
def finished(server: InProcessBatchd) -> dict[str, Any]:
    """Every file case uploaded and run at once; the finished batches by case name."""
    c = server.client
    batches = {}
    for case in FILE_CASES:
        f = upload(c, case.data)
        assert f.bytes == len(case.data), case.name
        batches[case.name] = c.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id

    def all_done() -> dict[str, Any] | None:
        got = {name: c.batches.retrieve(bid) for name, bid in batches.items()}
        return got if all(b.status in TERMINAL for b in got.values()) else None

    result: dict[str, Any] = wait_for(all_done, timeout=120, interval=0.3, what="corpus batches")
    return result


def test_corpus_is_big_enough() -> None:
    assert len(FILE_CASES) + len(UPLOAD_CASES) >= 40
    names = [c.name for c in FILE_CASES] + [c.name for c in UPLOAD_CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.name)
def test_malformed_file(case: FileCase, server: InProcessBatchd, finished: dict[str, Any]) -> None:
    b = finished[case.name]
    assert b.status == case.status, (b.status, b.errors)
    if case.status == "failed":
        codes = {e.code for e in b.errors.data}
        assert codes == case.codes, b.errors
        for e in b.errors.data:
            assert e.message
            if e.code not in ("empty_file", "too_many_tasks", "too_many_errors"):
                assert e.line is not None and e.line >= 1, e
        assert b.output_file_id is None and b.error_file_id is None
        return
    # A valid (if odd) file: every id answered once, byte for byte.
    assert b.errors is None or not b.errors.data
    ids = case.custom_ids
    assert b.request_counts.completed == len(ids), b.request_counts
    text = server.client.files.content(b.output_file_id).text
    got = [json.loads(raw)["custom_id"] for raw in text.splitlines() if raw.strip()]
    assert sorted(got) == sorted(ids)


@pytest.mark.parametrize("case", UPLOAD_CASES, ids=lambda c: c.name)
def test_bad_upload(case: UploadCase, server: InProcessBatchd) -> None:
    if case.raw is not None:
        ctype, body = case.content_type or "", case.raw
    else:
        ctype, body = multipart(case.fields, case.files)
    status, _, raw = server.http("POST", "/v1/files", body=body, headers={"Content-Type": ctype})
    assert status == case.status, raw[:500]
    reply = json.loads(raw)
    if status == 200:
        assert "/" not in reply["filename"] and ".." not in reply["filename"].split("/")
        return
    assert set(reply["error"]) == {"message", "type", "param", "code"}
    assert reply["error"]["type"] == "invalid_request_error"
    if case.code is not None:
        assert reply["error"]["code"] == case.code, reply


def _create_cases() -> list[CreateCase]:
    return create_cases(CREATE_FILE)


@pytest.mark.parametrize("case", _create_cases(), ids=lambda c: c.name)
def test_bad_batch_create(case: CreateCase, server: InProcessBatchd) -> None:
    real = upload(
        server.client,
        b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}\n',
    )
    body = json.dumps(case.body).replace(CREATE_FILE, real.id).encode()
    status, _, raw = server.http(
        "POST", "/v1/batches", body=body, headers={"Content-Type": "application/json"}
    )
    assert status == case.status, raw[:500]
    err = json.loads(raw)["error"]
    assert err["code"] == case.code, err
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize("file_id", UNKNOWN_INPUT_FILES)
def test_create_from_unknown_file_fails_the_batch(file_id: str, server: InProcessBatchd) -> None:
    body = json.dumps({"input_file_id": file_id, "endpoint": EP, "completion_window": "24h"})
    status, _, raw = server.http(
        "POST", "/v1/batches", body=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert status == 200, raw[:500]
    batch = json.loads(raw)
    assert batch["status"] == "failed" and batch["input_file_id"] == file_id
    [e] = batch["errors"]["data"]
    assert (e["code"], e["param"]) == ("invalid_request", "file_id")
    assert server.client.batches.retrieve(batch["id"]).status == "failed"
