"""parse_request_line and FileValidator, without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchd.jsonl import Line
from batchd.validation import FileValidator, LineError, Task, parse_request_line

EP = "/v1/chat/completions"


def req(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "custom_id": "a",
        "method": "POST",
        "url": EP,
        "body": {"model": "m", "messages": []},
    }
    base.update(over)
    return base


def parse(obj: Any, endpoint: str = EP) -> Task | LineError:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return parse_request_line(raw, line=3, endpoint=endpoint)


def err(obj: Any, endpoint: str = EP) -> tuple[str, str | None, int | None]:
    e = parse(obj, endpoint)
    assert isinstance(e, LineError), e
    assert e.message
    return e.code, e.param, e.line


def test_valid_line() -> None:
    t = parse(req())
    assert t == Task(custom_id="a", model="m", body={"model": "m", "messages": []})
    assert isinstance(parse(req(method="post")), Task)  # case-insensitive
    assert isinstance(parse(req(url=EP + "/")), Task)
    assert isinstance(parse(req(body={"model": "m", "messages": [], "stream": False})), Task)


@pytest.mark.parametrize("raw", [b"{", b"nope", b'{"a": 1} x', b"\xff\xfe"])
def test_invalid_json(raw: bytes) -> None:
    assert err(raw) == ("invalid_json_line", None, 3)


@pytest.mark.parametrize("obj", [[1], "s", 3, None, True])
def test_non_object(obj: Any) -> None:
    assert err(obj) == ("invalid_json_line", None, 3)


@pytest.mark.parametrize("field", ["custom_id", "method", "url", "body"])
def test_missing_field(field: str) -> None:
    obj = req()
    del obj[field]
    assert err(obj) == ("missing_required_parameter", field, 3)
    assert err(req(**{field: None})) == ("missing_required_parameter", field, 3)


def test_missing_model() -> None:
    assert err(req(body={"messages": []})) == ("missing_required_parameter", "body.model", 3)


def test_moderations_model_defaults() -> None:
    t = parse(req(url="/v1/moderations", body={"input": "x"}), endpoint="/v1/moderations")
    assert isinstance(t, Task) and t.model == "omni-moderation-latest"


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"custom_id": 1}, "custom_id"),
        ({"method": 1}, "method"),
        ({"url": ["x"]}, "url"),
        ({"body": []}, "body"),
        ({"body": {"model": 5}}, "body.model"),
        ({"body": {"model": ""}}, "body.model"),
    ],
)
def test_invalid_type(over: dict[str, Any], param: str) -> None:
    assert err(req(**over)) == ("invalid_type", param, 3)


def test_stream_true_is_streaming_unsupported() -> None:
    body = {"model": "m", "messages": [], "stream": True}
    assert err(req(body=body)) == ("streaming_unsupported", "body.stream", 3)


@pytest.mark.parametrize(
    ("endpoint", "body", "param"),
    [
        ("/v1/chat/completions", {"model": "m"}, "body.messages"),
        ("/v1/completions", {"model": "m"}, "body.prompt"),
        ("/v1/embeddings", {"model": "m"}, "body.input"),
        ("/v1/moderations", {"model": "m"}, "body.input"),
        ("/v1/moderations", {}, "body.input"),
        ("/v1/responses", {"model": "m"}, "body.input"),
        ("/v1/images/generations", {"model": "m"}, "body.prompt"),
        ("/v1/images/edits", {"model": "m", "prompt": "p"}, "body.image"),
        ("/v1/images/edits", {"model": "m", "image": "data:..."}, "body.prompt"),
        ("/v1/score", {"model": "m", "text_1": "a"}, "body.text_2"),
        ("/v1/score", {"model": "m", "text_2": "a"}, "body.text_1"),
        ("/v1/rerank", {"model": "m", "query": "q"}, "body.documents"),
        ("/v1/rerank", {"model": "m", "documents": ["d"]}, "body.query"),
        ("/v1/chat/completions", {"model": "m", "messages": None}, "body.messages"),
    ],
)
def test_required_body_fields(endpoint: str, body: dict[str, Any], param: str) -> None:
    line = req(url=endpoint, body=body)
    assert err(line, endpoint=endpoint) == ("missing_required_parameter", param, 3)


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("/v1/images/edits", {"model": "m", "prompt": "p", "images": [{"image_url": "u"}]}),
        ("/v1/score", {"model": "m", "queries": "a", "documents": ["b"]}),
        ("/v1/rerank", {"model": "m", "query": "q", "documents": ["d"]}),
        ("/v1/images/generations", {"model": "m", "prompt": "p"}),
    ],
)
def test_new_endpoints_accept_complete_bodies(endpoint: str, body: dict[str, Any]) -> None:
    assert isinstance(parse(req(url=endpoint, body=body), endpoint=endpoint), Task)


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"method": "GET"}, "method"),
        ({"custom_id": ""}, "custom_id"),
        ({"custom_id": "x" * 513}, "custom_id"),
    ],
)
def test_invalid_value(over: dict[str, Any], param: str) -> None:
    assert err(req(**over)) == ("invalid_value", param, 3)


@pytest.mark.parametrize(
    "url", ["/v1/embeddings", "http://evil/v1/chat/completions", "v1/chat/completions", ""]
)
def test_invalid_url(url: str) -> None:
    assert err(req(url=url)) == ("invalid_url", "url", 3)
    e = parse(req(url=url))
    assert isinstance(e, LineError)
    assert e.message == "The URL provided for this request does not match the batch endpoint."


def lines(*objs: Any) -> list[Line]:
    out = []
    for n, obj in enumerate(objs, 1):
        if obj == "TOO_LONG":
            out.append(Line(n, 0, 0, b"", too_long=True))
        else:
            out.append(Line(n, 0, 0, obj if isinstance(obj, bytes) else json.dumps(obj).encode()))
    return out


def run(*objs: Any, max_tasks: int = 100, max_errors: int = 100) -> Any:
    v = FileValidator(endpoint=EP, max_tasks=max_tasks, max_errors=max_errors)
    tasks = [v.feed(line) for line in lines(*objs)]
    return tasks, v.finish()


def codes(report: Any) -> list[tuple[str, int | None]]:
    return [(e.code, e.line) for e in report.errors]


def test_good_file() -> None:
    tasks, report = run(req(custom_id="a"), b"", b"  ", req(custom_id="b"))
    assert report.ok and report.total == 2 and report.model == "m"
    assert [t.custom_id if t else None for t in tasks] == ["a", None, None, "b"]


def test_duplicate_custom_id() -> None:
    _, report = run(req(custom_id="a"), req(custom_id="b"), req(custom_id="a"))
    assert codes(report) == [("duplicate_custom_id", 3)]
    assert report.errors[0].param == "custom_id"


def test_model_mismatch() -> None:
    _, report = run(req(custom_id="a"), req(custom_id="b", body={"model": "other", "messages": []}))
    assert codes(report) == [("model_mismatch", 2)]
    assert report.model == "m"


def test_empty_file() -> None:
    _, report = run()
    assert codes(report) == [("empty_file", None)]
    _, report = run(b"", b"\t")
    assert codes(report) == [("empty_file", None)]
    assert report.total == 0


def test_too_many_tasks() -> None:
    _, report = run(*[req(custom_id=str(i)) for i in range(3)], max_tasks=3)
    assert report.ok
    _, report = run(*[req(custom_id=str(i)) for i in range(4)], max_tasks=3)
    assert codes(report) == [("too_many_tasks", None)]
    assert report.total == 4


def test_line_too_long() -> None:
    _, report = run(req(custom_id="a"), "TOO_LONG", req(custom_id="b"))
    assert codes(report) == [("line_too_long", 2)]
    assert report.total == 3


def test_error_list_is_capped() -> None:
    _, report = run(*[b"{"] * 10, max_errors=4)
    assert codes(report) == [("invalid_json_line", n) for n in (1, 2, 3, 4)] + [
        ("too_many_errors", None)
    ]
    assert report.error_count == 10
    assert report.errors[-1].message.startswith("6 more")


def test_file_level_errors_survive_the_cap() -> None:
    _, report = run(*[b"{"] * 5, max_tasks=3, max_errors=2)
    assert [c for c, _ in codes(report)] == [
        "invalid_json_line",
        "invalid_json_line",
        "too_many_tasks",
        "too_many_errors",
    ]


def test_model_not_found_uses_the_routing_table() -> None:
    asked: list[str] = []

    def served(model: str) -> bool:
        asked.append(model)
        return model == "m"

    v = FileValidator(endpoint=EP, max_tasks=100, model_served=served)
    bad = req(custom_id="b", body={"model": "nope", "messages": []})
    for line in lines(req(custom_id="a"), bad, {**bad, "custom_id": "c"}):
        v.feed(line)
    report = v.finish()
    assert [(e.code, e.param, e.line) for e in report.errors] == [
        ("model_not_found", "body.model", 2),
        ("model_not_found", "body.model", 3),
    ]
    assert report.errors[0].message == (
        "The provided model 'nope' is not supported by the Batch API."
    )
    assert asked == ["m", "nope"]  # one look-up per distinct model


def test_without_a_routing_table_any_model_passes() -> None:
    v = FileValidator(endpoint=EP, max_tasks=100)
    v.feed(lines(req(body={"model": "anything", "messages": []}))[0])
    assert v.finish().ok
