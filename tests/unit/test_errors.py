"""One renderer for every OpenAI-shaped error body, wherever it is built.

The server's four exception handlers run in-process (httpx2 ASGI transport over
the real app); the backends' and the engine's bodies are compared with the same
renderer's output byte for byte.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from fastapi import FastAPI

from batchd.backends.base import error_body as backend_error_body
from batchd.backends.local.errors import RequestError, invalid, unsupported
from batchd.engine.outcome import parse_body
from batchd.errors import (
    BatchdError,
    Conflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    error_body,
    error_json,
)
from batchd.server.app import create_app
from batchd.settings import Settings

KEYS = ["message", "type", "param", "code"]


def test_error_body_has_the_four_keys_in_order() -> None:
    body = error_body("bad", error_type="rate_limit_error", param="p", code="c")
    assert list(body) == ["error"] and list(body["error"]) == KEYS
    assert body == {
        "error": {"message": "bad", "type": "rate_limit_error", "param": "p", "code": "c"}
    }
    assert error_json("bad", param="p") == (
        b'{"error":{"message":"bad","type":"invalid_request_error","param":"p","code":null}}'
    )


@pytest.mark.parametrize(
    ("error", "status", "type_"),
    [
        (BatchdError("x"), 500, "server_error"),
        (InvalidRequest("x", code="c", param="p"), 400, "invalid_request_error"),
        (NotFound("x"), 404, "invalid_request_error"),
        (Conflict("x"), 409, "invalid_request_error"),
        (RateLimited("x"), 429, "rate_limit_error"),
    ],
)
def test_error_tree_renders_through_error_body(error: BatchdError, status: int, type_: str) -> None:
    assert error.status_code == status
    expected = error_body("x", error_type=type_, param=error.param, code=error.code)
    assert error.to_body() == expected
    assert error.to_json() == orjson.dumps(expected)


def test_local_backend_errors_are_batchd_errors() -> None:
    err = RequestError("no such model", status=404, code="model_not_found", param="model")
    assert isinstance(err, BatchdError)
    assert (err.status, err.status_code, err.type_) == (404, 404, "invalid_request_error")
    assert err.to_json() == error_json("no such model", param="model", code="model_not_found")
    # What LocalBackend.send answers with is the same bytes.
    assert backend_error_body(
        err.message, type_=err.type_, code=err.code, param=err.param
    ) == err.to_json()
    assert unsupported("logprobs", "no").to_body()["error"]["code"] == "unsupported_parameter"
    assert invalid("n", "no").to_body()["error"] == {
        "message": "no",
        "type": "invalid_request_error",
        "param": "n",
        "code": "invalid_value",
    }
    server = RequestError("boom", status=500, type_="server_error", code="local_model_error")
    assert server.status_code == 500 and server.to_body()["error"]["type"] == "server_error"
    # An instance's status never leaks into the class or its siblings.
    assert BatchdError.status_code == 500 and RequestError("x").status_code == 400


def test_engine_wraps_a_non_json_answer_in_the_same_body() -> None:
    raw, parsed = parse_body(b"<html>502</html>")
    assert list(parsed["error"]) == KEYS
    assert parsed == error_body(
        "The model server answered with a non-JSON body: <html>502</html>",
        error_type="upstream_error",
        code="invalid_upstream_response",
    )
    assert orjson.loads(raw) == parsed


def _app(tmp_path: Path) -> FastAPI:
    app = create_app(Settings(data_dir=tmp_path, local_enabled=False, metrics_enabled=False))

    async def refused() -> None:
        raise Conflict("not now", code="batch_not_cancellable")

    async def broken() -> None:
        raise RuntimeError("a bug")

    async def typed(n: int) -> dict[str, int]:
        return {"n": n}

    app.add_api_route("/t/refused", refused)
    app.add_api_route("/t/broken", broken)
    app.add_api_route("/t/typed", typed)
    return app


def _get(app: FastAPI, path: str, method: str = "GET") -> httpx2.Response:
    async def call() -> httpx2.Response:
        transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path)

    return asyncio.run(call())


@pytest.mark.parametrize(
    ("path", "method", "status", "error"),
    [
        (
            "/t/refused",
            "GET",
            409,
            {
                "message": "not now",
                "type": "invalid_request_error",
                "param": None,
                "code": "batch_not_cancellable",
            },
        ),
        (
            "/t/typed?n=many",
            "GET",
            400,
            {
                "message": "Input should be a valid integer, unable to parse string as an "
                "integer: 'n'.",
                "type": "invalid_request_error",
                "param": "n",
                "code": "invalid_value",
            },
        ),
        (
            "/no/such/route",
            "GET",
            404,
            {
                "message": "Unknown route.",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            },
        ),
        (
            "/t/typed?n=1",
            "DELETE",
            405,
            {
                "message": "Method Not Allowed",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            },
        ),
        (
            "/t/broken",
            "GET",
            500,
            {
                "message": "The server had an error processing your request.",
                "type": "server_error",
                "param": None,
                "code": None,
            },
        ),
    ],
    ids=["batchd-error", "validation", "unknown-route", "wrong-method", "unexpected"],
)
def test_server_handlers_answer_the_same_shape(
    path: str, method: str, status: int, error: dict[str, Any], tmp_path: Path
) -> None:
    response = _get(_app(tmp_path), path, method)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    doc = json.loads(response.content)
    assert doc == {"error": error} and list(doc["error"]) == KEYS
    # Byte for byte what the one renderer makes (Starlette's compact JSON).
    assert response.content == json.dumps(
        error_body(**_kwargs(error)), ensure_ascii=False, separators=(",", ":")
    ).encode()


def _kwargs(error: dict[str, Any]) -> dict[str, Any]:
    return {
        "message": error["message"],
        "error_type": error["type"],
        "param": error["param"],
        "code": error["code"],
    }
