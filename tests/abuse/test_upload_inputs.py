"""Bad ``POST /v1/uploads`` and ``/complete`` bodies: a 400 each, never a 5xx, with and
without an ``Idempotency-Key`` (whose request digest must not choke on them either).

Found by schemathesis: integers past 64 bits and lone surrogates once made 500s.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from inproc import InProcessBatchd

OK: dict[str, Any] = {
    "filename": "in.jsonl",
    "mime_type": "text/jsonl",
    "bytes": 5,
    "purpose": "batch",
}
BAD_CREATES = {
    "bytes_negative": {**OK, "bytes": -1},
    "bytes_past_64_bits": {**OK, "bytes": -17074588990122036221525772502936059904},
    "bytes_huge": {**OK, "bytes": 2**70},
    "mime_type_lone_surrogate": {**OK, "mime_type": "\udb16"},
    "filename_lone_surrogate": {**OK, "filename": "\udb16.jsonl"},
    "purpose_lone_surrogate": {**OK, "purpose": "\udb16"},
    "expiry_past_64_bits": {**OK, "expires_after": {"anchor": "created_at", "seconds": 10**30}},
    "bytes_object": {**OK, "bytes": {"n": 5}},
}


def post(api: InProcessBatchd, path: str, body: Any, key: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    status, _, raw = api.http("POST", path, body=json.dumps(body).encode(), headers=headers)
    return status, json.loads(raw)


@pytest.mark.parametrize("key", [None, "retry-1"])
@pytest.mark.parametrize("name", sorted(BAD_CREATES))
def test_bad_upload_create_is_400(api: InProcessBatchd, name: str, key: str | None) -> None:
    status, body = post(api, "/v1/uploads", BAD_CREATES[name], key)
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"]


@pytest.mark.parametrize(
    "complete",
    [{"part_ids": ["\udb16"]}, {"part_ids": [123]}, {"part_ids": []}, {"part_ids": "x"}],
)
def test_bad_complete_is_400(api: InProcessBatchd, complete: dict[str, Any]) -> None:
    status, upload = post(api, "/v1/uploads", OK, None)
    assert status == 200, upload
    status, body = post(api, f"/v1/uploads/{upload['id']}/complete", complete, None)
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error"
