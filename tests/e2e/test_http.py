"""HTTP-level behaviour: health, unknown routes, malformed bodies, no tracebacks.

Against the app in this process (tests/inproc.py); every real-process test starts by
waiting for ``/health`` on a real socket (tests/harness.py).
"""

from __future__ import annotations

import json

from inproc import InProcessBatchd


def _is_openai_error(body: bytes) -> dict[str, object]:
    doc = json.loads(body)
    assert set(doc) == {"error"}
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    assert b"Traceback" not in body
    return doc["error"]  # type: ignore[no-any-return]


def test_health(api: InProcessBatchd) -> None:
    status, _, body = api.http("GET", "/health", headers={"Authorization": ""})
    assert status == 200
    assert json.loads(body)["status"] == "ok"


def test_unknown_route_is_openai_404(api: InProcessBatchd) -> None:
    for path in ("/v1/nope", "/v1/files/file-abc12345678/nope", "/"):
        status, _, body = api.http("GET", path)
        assert status == 404
        assert _is_openai_error(body)["type"] == "invalid_request_error"


def test_wrong_method_is_openai_error(api: InProcessBatchd) -> None:
    status, _, body = api.http("PUT", "/v1/batches")
    assert status == 405
    _is_openai_error(body)


def test_malformed_json_body_is_400(api: InProcessBatchd) -> None:
    for raw in (b"{not json", b"[1, 2]", b"", b'{"input_file_id": 5}'):
        status, _, body = api.http(
            "POST", "/v1/batches", body=raw, headers={"Content-Type": "application/json"}
        )
        assert status == 400, raw
        assert _is_openai_error(body)["type"] == "invalid_request_error"
    # Unknown fields are ignored (as OpenAI does): this batch fails on the file, not them.
    status, _, body = api.http(
        "POST",
        "/v1/batches",
        body=json.dumps(
            {
                "input_file_id": "file-abc12345678",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "surprise": 1,
            }
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 200, body
    created = json.loads(body)
    assert created["status"] == "failed"
    assert [e["param"] for e in created["errors"]["data"]] == ["file_id"]


def test_bad_query_parameters_are_400(api: InProcessBatchd) -> None:
    for path in ("/v1/files?limit=abc", "/v1/files?order=sideways", "/v1/batches?limit=x"):
        status, _, body = api.http("GET", path)
        assert status == 400, path
        _is_openai_error(body)
