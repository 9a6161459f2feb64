"""Idempotent creates through the official SDK: the same Idempotency-Key with the same
request answers with the first object; with a different request, 409. Per API key,
across restarts and across API servers sharing one database; concurrent requests
with one key create one object."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from harness import BatchdProcess, StartBatchd, chat_line, to_jsonl, upload
from upstream_server import UpstreamServer

KEYS = {"BATCHD_API_KEYS": "test-key,other-key"}


def key(k: str) -> dict[str, dict[str, str]]:
    return {"extra_headers": {"Idempotency-Key": k}}


@pytest.fixture
def proc(start_batchd: StartBatchd, upstream: UpstreamServer) -> BatchdProcess:
    return start_batchd(upstream=upstream.base_url, env=KEYS)


def test_files(proc: BatchdProcess) -> None:
    c = proc.client
    data = to_jsonl([chat_line(i) for i in range(3)])
    first = c.files.create(file=("a.jsonl", data), purpose="batch", **key("f1"))
    again = c.files.create(file=("a.jsonl", data), purpose="batch", **key("f1"))
    assert again.model_dump() == first.model_dump()
    assert [f.id for f in c.files.list().data] == [first.id]  # one file, not two
    with pytest.raises(openai.ConflictError) as err:  # other bytes, same key
        c.files.create(file=("a.jsonl", data + data), purpose="batch", **key("f1"))
    assert err.value.code == "idempotency_key_reused"
    with pytest.raises(openai.ConflictError):  # other fields, same key
        c.files.create(file=("b.jsonl", data), purpose="batch", **key("f1"))
    # Without a key, or with another key, a new file.
    assert c.files.create(file=("a.jsonl", data), purpose="batch").id != first.id
    # Keys are per API key: another key's same key is unrelated.
    other = proc.make_client(api_key="other-key")
    theirs = other.files.create(file=("a.jsonl", data), purpose="batch", **key("f1"))
    assert theirs.id != first.id
    # A refused request does not burn its key: a corrected retry with it succeeds.
    with pytest.raises(openai.BadRequestError):
        c.files.create(file=("x.txt", data), purpose="batch", **key("f2"))
    ok = c.files.create(file=("x.jsonl", data), purpose="batch", **key("f2"))
    assert ok.filename == "x.jsonl"


def test_batches_header_and_body_field(proc: BatchdProcess) -> None:
    c = proc.client
    f = upload(c, [chat_line(1)])
    args = {"input_file_id": f.id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    first = c.batches.create(**args, metadata={"a": "1", "b": "2"}, **key("b1"))  # type: ignore[arg-type]
    # The same metadata in another key order is the same request.
    again = c.batches.create(**args, metadata={"b": "2", "a": "1"}, **key("b1"))  # type: ignore[arg-type]
    assert again.id == first.id
    with pytest.raises(openai.ConflictError) as err:
        c.batches.create(**args, metadata={"a": "other"}, **key("b1"))  # type: ignore[arg-type]
    assert err.value.code == "idempotency_key_reused"
    # The body field some OpenAI-compatible servers accept works the same way.
    body = c.batches.create(**args, extra_body={"idempotency_key": "b2"})  # type: ignore[arg-type]
    assert c.batches.create(**args, **key("b2")).id == body.id  # type: ignore[arg-type]
    assert len(c.batches.list().data) == 2


def test_uploads_and_concurrent_requests(proc: BatchdProcess) -> None:
    c = proc.client
    params = {"bytes": 10, "filename": "a.jsonl", "mime_type": "text/jsonl", "purpose": "batch"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        ups = list(pool.map(lambda _: c.uploads.create(**params, **key("u1")), range(8)))  # type: ignore[arg-type]
    assert len({u.id for u in ups}) == 1
    with pytest.raises(openai.ConflictError):
        c.uploads.create(**{**params, "bytes": 11}, **key("u1"))  # type: ignore[arg-type]
    # A different kind of create cannot reuse the key either.
    with pytest.raises(openai.ConflictError):
        c.files.create(file=("a.jsonl", b"{}\n"), purpose="batch", **key("u1"))


def test_remembered_across_restarts_and_servers(
    start_batchd: StartBatchd, upstream: UpstreamServer, tmp_path: Path
) -> None:
    first = start_batchd(upstream=upstream.base_url, env=KEYS)
    c = first.client
    f = upload(c, [chat_line(1)])
    args = {"input_file_id": f.id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    b = c.batches.create(**args, **key("r1"))  # type: ignore[arg-type]
    first.kill()
    first.restart()
    assert first.client.batches.create(**args, **key("r1")).id == b.id  # type: ignore[arg-type]
    # A second API server on the same database and storage (no worker of its own).
    second = start_batchd(
        upstream=upstream.base_url,
        env={**KEYS, "BATCHD_DATABASE_URL": f"sqlite:///{first.data_dir / 'batchd.db'}",
             "BATCHD_STORAGE": f"file://{first.data_dir}", "BATCHD_WORKER": "false"},
    )  # fmt: skip
    assert second.client.batches.create(**args, **key("r1")).id == b.id  # type: ignore[arg-type]
    with pytest.raises(openai.ConflictError):
        second.client.batches.create(**{**args, "completion_window": "1h"}, **key("r1"))  # type: ignore[arg-type]
