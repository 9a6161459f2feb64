"""Output/error line shapes and usage extraction."""

from __future__ import annotations

import json

from batchd.engine import outcome
from batchd.store.records import Usage


def test_response_line_shape() -> None:
    body = b'{"choices": [], "usage": {"prompt_tokens": 3}}'
    line = json.loads(outcome.response_line('c"1', 200, "req_9", body))
    assert list(line) == ["id", "custom_id", "response", "error"]
    assert line["id"].startswith("batch_req_")
    assert line["custom_id"] == 'c"1'
    assert line["response"] == {
        "status_code": 200,
        "request_id": "req_9",
        "body": {"choices": [], "usage": {"prompt_tokens": 3}},
    }
    assert line["error"] is None


def test_request_ids_are_unique() -> None:
    ids = {json.loads(outcome.error_line("c", "x", "m"))["id"] for _ in range(100)}
    assert len(ids) == 100


def test_error_line_shape() -> None:
    line = json.loads(outcome.error_line("c1", "batch_expired", "too late"))
    assert line["response"] is None
    assert line["error"] == {"code": "batch_expired", "message": "too late"}
    assert line["custom_id"] == "c1"


def test_parse_body_keeps_json_and_wraps_the_rest() -> None:
    raw, parsed = outcome.parse_body(b'{"a": 1}')
    assert raw == b'{"a": 1}' and parsed == {"a": 1}
    raw, parsed = outcome.parse_body(b"<html>Bad Gateway</html>")
    assert json.loads(raw) == parsed
    assert parsed["error"]["code"] == "invalid_upstream_response"
    assert "Bad Gateway" in parsed["error"]["message"]
    raw, parsed = outcome.parse_body(b"")
    assert json.loads(raw)["error"]["code"] == "invalid_upstream_response"
    line = json.loads(outcome.response_line("c", 502, "r", outcome.parse_body(b"\xff<")[0]))
    assert line["response"]["status_code"] == 502


def test_usage_chat_shape() -> None:
    u = outcome.usage_of(
        {
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "total_tokens": 15,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 2},
            }
        }
    )
    assert u == Usage(
        input_tokens=10, cached_tokens=4, output_tokens=5, reasoning_tokens=2, total_tokens=15
    )


def test_usage_responses_shape() -> None:
    u = outcome.usage_of(
        {
            "usage": {
                "input_tokens": 7,
                "output_tokens": 3,
                "input_tokens_details": {"cached_tokens": 1},
                "output_tokens_details": {"reasoning_tokens": 2},
            }
        }
    )
    assert u == Usage(
        input_tokens=7, cached_tokens=1, output_tokens=3, reasoning_tokens=2, total_tokens=10
    )


def test_usage_embeddings_shape() -> None:
    u = outcome.usage_of({"usage": {"prompt_tokens": 4, "total_tokens": 4}})
    assert u == Usage(input_tokens=4, total_tokens=4)


def test_usage_absent_or_garbage() -> None:
    assert outcome.usage_of({"results": []}) is None
    assert outcome.usage_of([1]) is None
    assert outcome.usage_of({"usage": "lots"}) is None
    u = outcome.usage_of(
        {"usage": {"prompt_tokens": "3", "completion_tokens": True, "prompt_tokens_details": None}}
    )
    assert u == Usage()


def test_usage_add() -> None:
    u = Usage(1, 2, 3, 4, 5)
    u.add(Usage(10, 20, 30, 40, 50))
    assert u == Usage(11, 22, 33, 44, 55)
