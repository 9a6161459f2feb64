"""Fuzzing the line validator: arbitrary bytes and arbitrary JSON never make
``parse_request_line`` or ``FileValidator`` raise, and their verdicts agree with
an independent statement of the rules."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchd.jsonl import Line, iter_lines
from batchd.validation import (
    MAX_CUSTOM_ID_CHARS,
    FileValidator,
    LineError,
    Task,
    parse_request_line,
)

EP = "/v1/chat/completions"
CODES = {
    "invalid_json_line",
    "missing_required_parameter",
    "invalid_type",
    "invalid_value",
    "invalid_url",
    "streaming_unsupported",
}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# Request-shaped objects whose every field may be right, missing or of any type.
field = st.one_of
request_like = st.fixed_dictionaries(
    {},
    optional={
        "custom_id": field(st.text(max_size=20), json_values, st.just("x" * 600)),
        "method": field(st.sampled_from(["POST", "post", "GET", ""]), json_values),
        "url": field(
            st.sampled_from([EP, EP + "/", "/v1/embeddings", "http://h" + EP]), json_values
        ),
        "body": field(
            st.fixed_dictionaries(
                {},
                optional={
                    "model": field(st.sampled_from(["m", "n", ""]), json_values),
                    "stream": json_values,
                    "messages": json_values,
                },
            ),
            json_values,
        ),
    },
)


def expected_ok(obj: Any) -> bool:
    """The rules of a valid request line, written out independently."""
    if not isinstance(obj, dict):
        return False
    cid, method, url, body = (obj.get(k) for k in ("custom_id", "method", "url", "body"))
    return (
        isinstance(cid, str)
        and 1 <= len(cid) <= MAX_CUSTOM_ID_CHARS
        and isinstance(method, str)
        and method.upper() == "POST"
        and isinstance(url, str)
        and url.rstrip("/") == EP
        and isinstance(body, dict)
        and body.get("stream") is not True
        and isinstance(body.get("model"), str)
        and body["model"] != ""
        and body.get("messages") is not None
    )


def check_verdict(raw: bytes, obj: Any) -> Task | LineError:
    result = parse_request_line(raw, line=7, endpoint=EP)
    assert isinstance(result, Task | LineError)
    assert result == parse_request_line(raw, line=7, endpoint=EP)  # deterministic
    if isinstance(result, LineError):
        assert result.code in CODES, result
        assert result.line == 7 and result.message
    else:
        assert result.custom_id == obj["custom_id"]
        assert result.model == obj["body"]["model"]
        assert result.body == obj["body"]
    return result


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    try:
        obj: Any = json.loads(raw)
    except ValueError:
        obj = None
    result = check_verdict(raw, obj)
    if obj is None or not expected_ok(obj):
        assert isinstance(result, LineError)


@FUZZ
@given(json_values | request_like)
def test_arbitrary_json_verdict_matches_the_rules(obj: Any) -> None:
    raw = json.dumps(obj).encode()
    result = check_verdict(raw, obj)
    assert isinstance(result, Task) == expected_ok(obj), (obj, result)


@FUZZ
@given(st.lists(request_like | json_values, max_size=12), st.integers(1, 8))
def test_file_validator_verdict_matches_the_rules(objs: list[Any], max_tasks: int) -> None:
    v = FileValidator(endpoint=EP, max_tasks=max_tasks, max_errors=3)
    tasks = []
    offset = 0
    for n, obj in enumerate(objs, start=1):
        data = json.dumps(obj).encode()
        task = v.feed(Line(n, offset, offset + len(data) + 1, data))
        offset += len(data) + 1
        if task is not None:
            tasks.append(task)
    report = v.finish()
    # Independently: ok when 1..max_tasks lines, all valid, ids unique, one model.
    valid = [o for o in objs if expected_ok(o)]
    ok = (
        0 < len(objs) <= max_tasks
        and len(valid) == len(objs)
        and len({o["custom_id"] for o in valid}) == len(valid)
        and len({o["body"]["model"] for o in valid}) == 1
    )
    assert report.ok == ok, (objs, report)
    assert report.total == len(objs)
    assert len([e for e in report.errors if e.line is not None]) <= 3
    if ok:
        assert [t.custom_id for t in tasks] == [o["custom_id"] for o in objs]
        assert report.model == objs[0]["body"]["model"]
    else:
        assert report.error_count >= 1 and report.errors


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(1, 50), min_size=1, max_size=10))
def test_any_bytes_in_any_chunks_split_and_validate(data: bytes, cuts: list[int]) -> None:
    """The whole read path of the validating phase: chunked bytes -> lines -> verdict."""

    async def chunks() -> Any:
        pos = 0
        for size in cuts * (len(data) // max(1, sum(cuts)) + 1):
            if pos >= len(data):
                break
            yield data[pos : pos + size]
            pos += size

    async def run() -> list[Line]:
        return [line async for line in iter_lines(chunks(), max_line_bytes=64)]

    lines = asyncio.run(run())
    v = FileValidator(endpoint=EP, max_tasks=5)
    for line in lines:
        v.feed(line)
    report = v.finish()
    assert report.total == sum(1 for x in lines if not x.blank)
    # Numbers run 1.. without gaps and offsets tile the input.
    assert [x.number for x in lines] == list(range(1, len(lines) + 1))
    if lines:
        assert lines[0].start == 0 and lines[-1].end == len(data)
        assert all(a.end == b.start for a, b in itertools.pairwise(lines))
