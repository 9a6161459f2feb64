"""The Files API through the official SDK: upload, retrieve, list, content, delete, limits.

The first case runs against a real server process; the rest against the app in this
process (tests/inproc.py), through the same SDK.
"""

from __future__ import annotations

import time

import openai
import pytest

from harness import BatchdProcess, chat_line, to_jsonl, upload
from inproc import InProcessBatchd, StartApi
from upstream_server import UpstreamServer

THIRTY_DAYS = 30 * 24 * 3600


def test_upload_and_retrieve(batchd: BatchdProcess) -> None:
    data = to_jsonl([chat_line(i) for i in range(3)])
    before = int(time.time())
    f = upload(batchd.client, data, filename="my input.jsonl")
    assert f.id.startswith("file-")
    assert f.object == "file"
    assert f.bytes == len(data)
    assert f.filename == "my input.jsonl"
    assert f.purpose == "batch"
    assert before <= f.created_at <= int(time.time())
    assert f.expires_at == f.created_at + THIRTY_DAYS  # batch inputs: 30 days by default
    got = batchd.client.files.retrieve(f.id)
    assert got.model_dump() == f.model_dump()
    assert batchd.client.files.content(f.id).content == data


def test_expires_after(api: InProcessBatchd) -> None:
    c = api.client
    f = c.files.create(
        file=("a.jsonl", b"{}\n"),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 7200},
    )
    assert f.expires_at == f.created_at + 7200
    with pytest.raises(openai.BadRequestError):
        c.files.create(
            file=("a.jsonl", b"{}\n"),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 10},
        )
    other = c.files.create(file=("notes.txt", b"hello"), purpose="user_data")
    assert other.expires_at is None
    assert other.purpose == "user_data"


def test_list_order_limit_after_purpose(api: InProcessBatchd) -> None:
    c = api.client
    ids = []
    for i in range(5):
        purpose = "batch" if i % 2 == 0 else "user_data"
        name = f"f{i}.jsonl" if purpose == "batch" else f"f{i}.txt"
        ids.append(c.files.create(file=(name, b"{}\n"), purpose=purpose).id)

    newest_first = [f.id for f in c.files.list().data]
    assert newest_first == ids[::-1]
    assert [f.id for f in c.files.list(order="asc").data] == ids

    page = c.files.list(limit=2, order="asc")
    assert [f.id for f in page.data] == ids[:2]
    assert page.has_more is True
    page2 = c.files.list(limit=2, order="asc", after=ids[1])
    assert [f.id for f in page2.data] == ids[2:4]
    last = c.files.list(limit=2, order="asc", after=ids[3])
    assert [f.id for f in last.data] == ids[4:]
    assert last.has_more is False
    # The SDK's auto-pagination follows the cursor through every page.
    assert [f.id for f in c.files.list(limit=2)] == ids[::-1]

    assert [f.id for f in c.files.list(purpose="batch", order="asc").data] == ids[0::2]
    assert [f.id for f in c.files.list(purpose="user_data", order="asc").data] == ids[1::2]

    status, _, body = api.http("GET", "/v1/files?limit=2&order=desc")
    assert status == 200
    import json

    doc = json.loads(body)
    assert doc["object"] == "list"
    assert doc["first_id"] == ids[4] and doc["last_id"] == ids[3]
    assert doc["has_more"] is True


def test_delete(api: InProcessBatchd) -> None:
    c = api.client
    f = upload(c, [chat_line(1)])
    keep = upload(c, [chat_line(2)])
    deleted = c.files.delete(f.id)
    assert deleted.model_dump() == {"id": f.id, "object": "file", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        c.files.content(f.id)
    with pytest.raises(openai.NotFoundError):
        c.files.delete(f.id)
    assert [x.id for x in c.files.list().data] == [keep.id]
    assert not (api.data_dir / "files" / f.id).exists()


@pytest.mark.parametrize("bad_id", ["file-doesnotexist123", "../../etc/passwd", "x"])
def test_unknown_file_is_404(api: InProcessBatchd, bad_id: str) -> None:
    with pytest.raises(openai.NotFoundError):
        api.client.files.retrieve(bad_id)
    with pytest.raises(openai.NotFoundError):
        api.client.files.content(bad_id)


def test_upload_limits(start_api: StartApi, upstream: UpstreamServer) -> None:
    server = start_api(
        upstream=upstream.base_url,
        env={"BATCHD_MAX_BATCH_FILE_BYTES": "1000", "BATCHD_MAX_FILE_BYTES": "4000"},
    )
    c = server.client
    small = to_jsonl([chat_line(1)])
    assert upload(c, small).bytes == len(small)
    big = to_jsonl([chat_line(i) for i in range(20)])
    assert 1000 < len(big) < 4000
    with pytest.raises(openai.APIStatusError) as err:
        upload(c, big)
    assert err.value.status_code == 413
    assert err.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    # The batch limit is for batch inputs only; other purposes have the general limit.
    assert c.files.create(file=("big.txt", big), purpose="user_data").bytes == len(big)
    with pytest.raises(openai.APIStatusError) as err:
        c.files.create(file=("huge.txt", b"x" * 5000), purpose="user_data")
    assert err.value.status_code == 413
    # The purpose field may come after the file part: the limit still applies.
    boundary = "XyZbOuNdArY"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        f"Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    body += (
        big + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'.encode()
    )
    body += f"batch\r\n--{boundary}--\r\n".encode()
    status, _, _ = server.http(
        "POST",
        "/v1/files",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert status == 413
    # Nothing half-uploaded is left behind.
    assert {f.bytes for f in c.files.list().data} == {len(small), len(big)}
    assert list((server.data_dir / "tmp").iterdir()) == []


def test_upload_rejects_bad_requests(api: InProcessBatchd) -> None:
    c = api.client
    with pytest.raises(openai.BadRequestError):
        c.files.create(file=("in.txt", b"{}\n"), purpose="batch")  # batch inputs are .jsonl
    with pytest.raises(openai.BadRequestError):
        c.files.create(file=("in.jsonl", b"{}\n"), purpose="nonsense")  # type: ignore[arg-type]
    status, _, body = api.http(
        "POST", "/v1/files", body=b"purpose=batch", headers={"Content-Type": "text/plain"}
    )
    assert status == 400 and b'"error"' in body
    assert c.files.list().data == []
