"""API keys: 401s in OpenAI's shape, and each key a tenant of its own.

The ``--api-key`` flags are checked through a real ``batchd serve`` process; the
rest runs against the app in this process (tests/inproc.py), through the same SDK.
"""

from __future__ import annotations

import json

import openai
import pytest

from harness import StartBatchd, chat_line, create_batch, upload, wait_batch
from inproc import InProcessBatchd, StartApi
from upstream_server import UpstreamServer


@pytest.fixture
def secured(start_api: StartApi, upstream: UpstreamServer) -> InProcessBatchd:
    return start_api(upstream=upstream.base_url, api_keys=["k1", "k2"], api_key="k1")


def test_api_key_flags(start_batchd: StartBatchd, upstream: UpstreamServer) -> None:
    server = start_batchd(
        upstream=upstream.base_url, args=["--api-key", "k1", "--api-key", "k2"], api_key="k1"
    )
    assert server.client.files.list().data == []
    assert server.make_client(api_key="k2").batches.list().data == []
    with pytest.raises(openai.AuthenticationError):
        server.make_client(api_key="k3").files.list()
    status, _, body = server.http("GET", "/v1/batches", headers={"Authorization": ""})
    assert status == 401 and json.loads(body)["error"]["type"] == "invalid_request_error"


def test_missing_or_wrong_key_is_401(secured: InProcessBatchd) -> None:
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic azE6"},
        {"Authorization": "k1"},
    ):
        for method, path in (
            ("GET", "/v1/files"),
            ("GET", "/v1/batches"),
            ("GET", "/v1/models"),
            ("GET", "/v1/batches/batch_abc12345678"),
        ):
            status, _, body = secured.http(method, path, headers=headers)
            assert status == 401, (headers, path)
            err = json.loads(body)["error"]
            assert set(err) == {"message", "type", "param", "code"}
            assert err["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):
        secured.make_client(api_key="wrong").files.list()
    with pytest.raises(openai.AuthenticationError):
        secured.make_client(api_key="wrong").batches.create(
            input_file_id="file-abc12345678",
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
    # Health checks need no key.
    assert secured.http("GET", "/health", headers={"Authorization": ""})[0] == 200


def test_each_key_sees_only_its_own(secured: InProcessBatchd) -> None:
    one = secured.make_client(api_key="k1")
    two = secured.make_client(api_key="k2")
    f1 = upload(one, [chat_line(i) for i in range(3)])
    b1 = wait_batch(one, create_batch(one, [chat_line(i) for i in range(3)]).id)
    assert b1.status == "completed"
    f2 = upload(two, [chat_line(9)])

    for call in (
        lambda: two.files.retrieve(f1.id),
        lambda: two.files.content(f1.id),
        lambda: two.files.delete(f1.id),
        lambda: two.files.retrieve(b1.output_file_id),
        lambda: two.files.content(b1.output_file_id),
        lambda: two.batches.retrieve(b1.id),
        lambda: two.batches.cancel(b1.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert [f.id for f in two.files.list().data] == [f2.id]
    assert two.batches.list().data == []
    # A batch from the other key's file is created failed, as for a file that does not
    # exist (OpenAI's answer); it is the caller's own and reads nothing of the file.
    theirs = two.batches.create(
        input_file_id=f1.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert theirs.status == "failed" and theirs.errors is not None
    assert [(e.code, e.param) for e in theirs.errors.data] == [("invalid_request", "file_id")]
    assert [b.id for b in two.batches.list().data] == [theirs.id]
    assert theirs.id not in {b.id for b in one.batches.list().data}
    # Cursors of another tenant's ids reveal nothing either.
    assert [f.id for f in two.files.list(after=f1.id).data] == [f2.id]

    assert f1.id in {f.id for f in one.files.list().data}
    assert f2.id not in {f.id for f in one.files.list().data}
    assert [b.id for b in one.batches.list().data] == [b1.id]
    assert one.files.retrieve(f1.id).id == f1.id
    # k1's things are still there after k2's attempts.
    assert one.files.content(f1.id).content
    assert one.batches.retrieve(b1.id).status == "completed"


def test_api_keys_from_environment(start_api: StartApi, upstream: UpstreamServer) -> None:
    server = start_api(
        upstream=upstream.base_url, env={"BATCHD_API_KEYS": "alpha, beta"}, api_key="beta"
    )
    assert server.client.files.list().data == []
    assert server.make_client(api_key="alpha").files.list().data == []
    with pytest.raises(openai.AuthenticationError):
        server.make_client(api_key="gamma").files.list()
