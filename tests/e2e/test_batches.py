"""The Batches API: create, retrieve, list, the Batch object's fields, output lines.

The whole lifecycle runs against a real server process; the other cases against the
app in this process (tests/inproc.py), through the same SDK.
"""

from __future__ import annotations

import json
import time

import openai
import pytest

from harness import (
    BatchdProcess,
    by_custom_id,
    chat_line,
    create_batch,
    results,
    upload,
    wait_batch,
)
from inproc import InProcessBatchd
from upstream_server import UpstreamServer


def test_batch_lifecycle_and_fields(batchd: BatchdProcess, upstream: UpstreamServer) -> None:
    c = batchd.client
    lines = [chat_line(i) for i in range(25)]
    before = int(time.time())
    created = create_batch(c, lines, metadata={"project": "tests", "run": "1"})
    assert created.id.startswith("batch_")
    assert created.object == "batch"
    assert created.status == "validating"
    assert created.endpoint == "/v1/chat/completions"
    assert created.completion_window == "24h"
    assert before <= created.created_at <= int(time.time())
    assert created.expires_at == created.created_at + 24 * 3600
    assert created.metadata == {"project": "tests", "run": "1"}
    assert created.output_file_id is None and created.error_file_id is None
    assert created.errors is None

    b = wait_batch(c, created.id)
    assert b.status == "completed"
    assert b.model == "test-model"
    assert b.request_counts is not None
    assert b.request_counts.model_dump() == {"total": 25, "completed": 25, "failed": 0}
    assert b.in_progress_at is not None and b.finalizing_at is not None
    assert b.completed_at is not None
    assert created.created_at <= b.in_progress_at <= b.finalizing_at <= b.completed_at
    assert b.failed_at is None and b.cancelled_at is None and b.expired_at is None
    assert b.cancelling_at is None
    assert b.metadata == {"project": "tests", "run": "1"}
    assert b.error_file_id is None
    assert b.errors is None

    out_file = c.files.retrieve(b.output_file_id)
    assert out_file.purpose == "batch_output"
    out, err = results(c, b)
    assert err == []
    got = by_custom_id(out)
    assert set(got) == {f"r{i}" for i in range(25)}
    for i in range(25):
        line = got[f"r{i}"]
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["id"].startswith("batch_req_")
        assert line["error"] is None
        resp = line["response"]
        assert set(resp) == {"status_code", "request_id", "body"}
        assert resp["status_code"] == 200
        assert resp["request_id"].startswith("req_")  # the upstream's x-request-id
        assert resp["body"]["object"] == "chat.completion"
        assert resp["body"]["choices"][0]["message"]["content"] == f"echo: hello {i}"
    assert len({line["id"] for line in out}) == 25
    # Each request went upstream exactly once.
    assert all(upstream.stats.attempts[f"hello {i}"] == 1 for i in range(25))
    assert upstream.stats.total == 25
    # The SDK's own models accept what we return.
    assert openai.types.Batch.model_validate(b.model_dump()).id == b.id


def test_list_batches_pagination(api: InProcessBatchd) -> None:
    c = api.client
    f = upload(c, [chat_line(1)])
    ids = [
        c.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(5)
    ]
    newest_first = ids[::-1]
    page = c.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more is True
    assert [b.id for b in c.batches.list(limit=2, after=newest_first[1]).data] == newest_first[2:4]
    last = c.batches.list(limit=2, after=newest_first[3])
    assert [b.id for b in last.data] == newest_first[4:]
    assert last.has_more is False
    assert [b.id for b in c.batches.list(limit=2)] == newest_first  # auto-pagination
    assert [b.id for b in c.batches.list().data] == newest_first  # default limit 20

    status, _, body = api.http("GET", "/v1/batches?limit=3")
    doc = json.loads(body)
    assert status == 200 and doc["object"] == "list"
    assert doc["first_id"] == newest_first[0] and doc["last_id"] == newest_first[2]
    assert doc["has_more"] is True
    status, _, body = api.http("GET", f"/v1/batches?limit=3&after={newest_first[2]}")
    doc = json.loads(body)
    assert [b["id"] for b in doc["data"]] == newest_first[3:]
    assert doc["has_more"] is False
    for bad in ("0", "101"):
        status, _, body = api.http("GET", f"/v1/batches?limit={bad}")
        assert status == 400 and json.loads(body)["error"]["param"] == "limit"


@pytest.mark.parametrize(
    ("metadata", "ok"),
    [
        ({f"k{i}": "v" for i in range(16)}, True),
        ({f"k{i}": "v" for i in range(17)}, False),
        ({"k" * 64: "v"}, True),
        ({"k" * 65: "v"}, False),
        ({"k": "v" * 512}, True),
        ({"k": "v" * 513}, False),
    ],
)
def test_metadata_limits(api: InProcessBatchd, metadata: dict[str, str], ok: bool) -> None:
    c = api.client
    f = upload(c, [chat_line(1)])

    def create() -> object:
        return c.batches.create(
            input_file_id=f.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata=metadata,
        )

    if ok:
        b = create()
        assert b.metadata == metadata  # type: ignore[attr-defined]
    else:
        with pytest.raises(openai.BadRequestError) as err:
            create()
        assert err.value.body["param"] == "metadata"  # type: ignore[index]
        assert c.batches.list().data == []


def test_unknown_batch_is_404(api: InProcessBatchd) -> None:
    for bad in ("batch_doesnotexist1234", "nope", "batch_../../x"):
        with pytest.raises(openai.NotFoundError):
            api.client.batches.retrieve(bad)
        with pytest.raises(openai.NotFoundError):
            api.client.batches.cancel(bad)


def test_output_expires_after(api: InProcessBatchd) -> None:
    c = api.client
    f = upload(c, [chat_line(1)])
    b = c.batches.create(
        input_file_id=f.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 3600},
    )
    b = wait_batch(c, b.id)
    out = c.files.retrieve(b.output_file_id)
    assert out.expires_at == out.created_at + 3600


def test_cancel_finished_batch_is_refused(api: InProcessBatchd) -> None:
    c = api.client
    b = wait_batch(c, create_batch(c, [chat_line(1)]).id)
    assert b.status == "completed"
    with pytest.raises(openai.APIStatusError) as err:
        c.batches.cancel(b.id)
    assert 400 <= err.value.status_code < 500
    assert c.batches.retrieve(b.id).status == "completed"


def test_input_file_can_be_deleted_while_batch_runs(
    api: InProcessBatchd, upstream: UpstreamServer
) -> None:
    from upstream_server import Faults

    upstream.reset(Faults(delay=0.05))
    c = api.client
    b = create_batch(c, [chat_line(i) for i in range(40)])
    c.files.delete(b.input_file_id)
    b = wait_batch(c, b.id)
    assert b.status == "completed"
    assert b.request_counts.completed == 40  # type: ignore[union-attr]
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(b.input_file_id)
