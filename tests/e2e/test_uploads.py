"""The Uploads API through the official SDK: chunked uploads that run as batches, raw
parts sent in parallel and out of order, the errors, and SIGKILLs during an upload
and during completion (a complete File or none; no parts left after expiry)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from harness import BatchdProcess, StartBatchd, chat_line, results, to_jsonl, wait_batch, wait_for
from upstream_server import UpstreamServer

PURGE_FAST = {"BATCHD_FILE_PURGE_INTERVAL": "0.3"}


def blob_names(proc: BatchdProcess) -> set[str]:
    return {p.name for p in (proc.data_dir / "files").iterdir()}


def send_parts(client: openai.OpenAI, upload_id: str, chunks: list[bytes]) -> list[str]:
    """Every chunk as a part, all at once from a thread pool, in shuffled order;
    returns the part ids in chunk order."""
    order = list(range(len(chunks)))
    random.Random(7).shuffle(order)
    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        futures = {i: pool.submit(client.uploads.parts.create, upload_id, data=chunks[i])
                   for i in order}  # fmt: skip
        return [futures[i].result().id for i in range(len(chunks))]


def test_upload_file_chunked_runs_as_a_batch(
    batchd: BatchdProcess, upstream: UpstreamServer, tmp_path: Path
) -> None:
    c = batchd.client
    data = to_jsonl([chat_line(i) for i in range(300)])
    path = tmp_path / "requests.jsonl"
    path.write_bytes(data)
    up = c.uploads.upload_file_chunked(
        file=path, mime_type="application/jsonl", purpose="batch", part_size=4096,
        md5=hashlib.md5(data).hexdigest(),
    )  # fmt: skip
    assert up.object == "upload" and up.status == "completed"
    assert up.bytes == len(data) and up.filename == "requests.jsonl" and up.purpose == "batch"
    assert up.expires_at == up.created_at + 3600
    assert up.file is not None and up.file.bytes == len(data) and up.file.purpose == "batch"
    assert c.files.retrieve(up.file.id).filename == "requests.jsonl"
    assert c.files.content(up.file.id).content == data
    batch = c.batches.create(
        input_file_id=up.file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_batch(c, batch.id)
    assert done.status == "completed", done
    out, errors = results(c, done)
    assert sorted(line["custom_id"] for line in out) == sorted(f"r{i}" for i in range(300))
    assert errors == []
    # The parts went with completion: only the File (and the batch's outputs) remain.
    assert not {n for n in blob_names(batchd) if n.startswith("part_")}


def test_parts_in_parallel_and_out_of_order(batchd: BatchdProcess) -> None:
    c = batchd.client
    lines = [chat_line(i, text="x" * random.Random(i).randint(1, 300)) for i in range(400)]
    data = to_jsonl(lines)
    cuts = sorted(random.Random(3).sample(range(1, len(data)), 7))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    up = c.uploads.create(bytes=len(data), filename="big.jsonl", mime_type="text/jsonl",
                          purpose="batch")  # fmt: skip
    assert up.status == "pending" and up.file is None
    part_ids = send_parts(c, up.id, chunks)
    done = c.uploads.complete(up.id, part_ids=part_ids, md5=hashlib.md5(data).hexdigest())
    assert done.status == "completed" and done.file is not None
    assert c.files.content(done.file.id).content == data
    # Completing again (a retry whose first answer was lost) gives the same File.
    again = c.uploads.complete(up.id, part_ids=part_ids)
    assert again.file is not None and again.file.id == done.file.id
    with pytest.raises(openai.ConflictError) as err:
        c.uploads.parts.create(up.id, data=b"late")
    assert err.value.code == "invalid_state"


def test_errors(start_batchd: StartBatchd, upstream: UpstreamServer) -> None:
    proc = start_batchd(upstream=upstream.base_url,
                        env={"BATCHD_MAX_UPLOAD_PART_BYTES": "1000",
                             "BATCHD_API_KEYS": "test-key,other-key",
                             "BATCHD_MAX_BATCH_FILE_BYTES": "5000"})  # fmt: skip
    c = proc.client
    with pytest.raises(openai.NotFoundError) as nf:
        c.uploads.parts.create("upload_0123456789abcdef", data=b"x")
    assert nf.value.code == "upload_not_found"
    with pytest.raises(openai.NotFoundError):
        c.uploads.complete("upload_0123456789abcdef", part_ids=["part_0123456789"])
    with pytest.raises(openai.BadRequestError) as bad:
        c.uploads.create(bytes=10, filename="notes.txt", mime_type="text/plain", purpose="batch")
    assert bad.value.code == "invalid_file_format"
    with pytest.raises(openai.BadRequestError) as bad:
        c.uploads.create(bytes=6000, filename="a.jsonl", mime_type="text/jsonl", purpose="batch")
    assert (bad.value.code, bad.value.param) == ("file_too_large", "bytes")
    with pytest.raises(openai.BadRequestError) as bad:
        c.uploads.create(bytes=10, filename="a.jsonl", mime_type="text/jsonl", purpose="nope")  # type: ignore[arg-type]
    assert bad.value.code == "invalid_value"

    up = c.uploads.create(bytes=1500, filename="a.jsonl", mime_type="text/jsonl", purpose="batch")
    with pytest.raises(openai.APIStatusError) as big:
        c.uploads.parts.create(up.id, data=b"x" * 1001)
    assert big.value.status_code == 413 and big.value.code == "part_too_large"
    a = c.uploads.parts.create(up.id, data=b"a" * 1000)
    b = c.uploads.parts.create(up.id, data=b"b" * 400)
    with pytest.raises(openai.BadRequestError) as short:
        c.uploads.complete(up.id, part_ids=[a.id, b.id])
    assert short.value.code == "bytes_mismatch"
    d = c.uploads.parts.create(up.id, data=b"d" * 100)
    with pytest.raises(openai.BadRequestError) as md5:
        c.uploads.complete(up.id, part_ids=[a.id, b.id, d.id], md5="0" * 32)
    assert md5.value.code == "md5_mismatch"
    with pytest.raises(openai.BadRequestError) as unknown:
        c.uploads.complete(up.id, part_ids=[a.id, b.id, "part_0123456789abcdef"])
    assert unknown.value.param == "part_ids"
    # Another API key cannot see it (and it looks like no upload at all).
    other = proc.make_client(api_key="other-key")
    with pytest.raises(openai.NotFoundError):
        other.uploads.cancel(up.id)

    cancelled = c.uploads.cancel(up.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.ConflictError):
        c.uploads.parts.create(up.id, data=b"x")
    with pytest.raises(openai.ConflictError):
        c.uploads.complete(up.id, part_ids=[a.id, b.id, d.id])
    # Cancelling dropped the parts at once.
    assert not {n for n in blob_names(proc) if n.startswith("part_")}


def _slow_part(proc: BatchdProcess, upload_id: str, started: threading.Event) -> None:
    """Send a part's body in small pieces, forever (until the server dies)."""
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"p\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=30)
    conn.putrequest("POST", f"/v1/uploads/{upload_id}/parts")
    conn.putheader("Authorization", f"Bearer {proc.api_key}")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(len(head) + 10_000_000))
    conn.endheaders()
    try:
        conn.send(head)
        for _ in range(10_000):
            conn.send(b"y" * 1000)
            started.set()
            time.sleep(0.001)
    except OSError:
        return  # the server was killed mid-part, as intended


def test_sigkill_during_a_part_leaves_no_part_and_expiry_purges(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    proc = start_batchd(upstream=upstream.base_url,
                        env={"BATCHD_UPLOAD_TTL": "15", **PURGE_FAST})  # fmt: skip
    c = proc.client
    up = c.uploads.create(bytes=100, filename="a.jsonl", mime_type="text/jsonl", purpose="batch")
    kept = c.uploads.parts.create(up.id, data=b"z" * 50)
    started = threading.Event()
    sender = threading.Thread(target=_slow_part, args=(proc, up.id, started))
    sender.start()
    assert started.wait(10)
    time.sleep(0.3)  # bytes of the part are arriving
    proc.kill()
    sender.join(30)
    assert any((proc.data_dir / "tmp").iterdir()), "the killed part should have left a temp file"
    proc.restart()
    # The half-sent part is no part: its temp file is gone and it cannot be completed.
    assert not any((proc.data_dir / "tmp").iterdir())
    assert blob_names(proc) == {kept.id}
    with pytest.raises(openai.BadRequestError) as short:
        proc.client.uploads.complete(up.id, part_ids=[kept.id])
    assert short.value.code == "bytes_mismatch"
    # After the upload expires, the purge takes its parts.
    wait_for(lambda: not blob_names(proc), timeout=30, what="parts purged after expiry")
    with pytest.raises(openai.ConflictError):
        proc.client.uploads.parts.create(up.id, data=b"z")
    assert proc.client.files.list().data == []


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.08, 0.3])
def test_sigkill_during_completion_leaves_a_whole_file_or_none(
    start_batchd: StartBatchd, upstream: UpstreamServer, delay: float
) -> None:
    proc = start_batchd(upstream=upstream.base_url,
                        env={"BATCHD_UPLOAD_TTL": "60", **PURGE_FAST})  # fmt: skip
    c = proc.client
    chunks = [bytes([65 + i]) * 6_000_000 for i in range(6)]  # 36 MB: completion takes a while
    data = b"".join(chunks)
    up = c.uploads.create(bytes=len(data), filename="big.txt", mime_type="text/plain",
                          purpose="user_data")  # fmt: skip
    part_ids = send_parts(c, up.id, chunks)
    caller = threading.Thread(
        target=lambda: _ignore_errors(lambda: c.uploads.complete(up.id, part_ids=part_ids))
    )
    caller.start()
    time.sleep(delay)
    proc.kill()
    caller.join(30)
    proc.restart()
    c = proc.client
    files = c.files.list().data
    assert len(files) <= 1
    if files:  # published before the kill: whole
        assert files[0].bytes == len(data)
        assert c.files.content(files[0].id).content == data
    # Whatever happened, the file is completed exactly once by a retry within the hour.
    done = c.uploads.complete(up.id, part_ids=part_ids)
    assert done.status == "completed" and done.file is not None
    assert [f.id for f in c.files.list().data] == [done.file.id]
    assert c.files.content(done.file.id).content == data
    # No part and no stray blob remains: only the File's bytes.
    wait_for(lambda: blob_names(proc) == {done.file.id}, timeout=15, what="only the File left")
    assert not any((proc.data_dir / "tmp").iterdir())


def test_sigkill_during_completion_then_expiry_leaves_nothing(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    proc = start_batchd(upstream=upstream.base_url,
                        env={"BATCHD_UPLOAD_TTL": "12", **PURGE_FAST})  # fmt: skip
    c = proc.client
    chunks = [bytes([97 + i]) * 6_000_000 for i in range(6)]
    up = c.uploads.create(bytes=36_000_000, filename="big.txt", mime_type="text/plain",
                          purpose="user_data")  # fmt: skip
    part_ids = send_parts(c, up.id, chunks)
    caller = threading.Thread(
        target=lambda: _ignore_errors(lambda: c.uploads.complete(up.id, part_ids=part_ids))
    )
    caller.start()
    time.sleep(0.03)
    proc.kill()
    caller.join(30)
    proc.restart()
    files = proc.client.files.list().data
    if files:  # the kill came after publishing: a whole File, and only it stays
        assert proc.client.files.content(files[0].id).content == b"".join(chunks)
        wait_for(lambda: blob_names(proc) == {files[0].id}, timeout=15, what="parts purged")
    else:  # never completed: after expiry nothing at all is left
        wait_for(lambda: not blob_names(proc), timeout=30, what="everything purged")
    assert not any((proc.data_dir / "tmp").iterdir())


def _ignore_errors(fn: Callable[[], object]) -> None:
    # The server is killed under the call: its error is expected.
    with contextlib.suppress(openai.APIError, OSError):
        fn()


def test_completion_on_s3_storage(start_batchd: StartBatchd, upstream: UpstreamServer) -> None:
    """On S3 (moto's server) completion is one multipart upload: 5 MiB+ parts are copied
    server-side, the small last one streamed; the File then runs as a batch."""
    from store.s3 import client, env_for, moto_s3, new_bucket

    with moto_s3() as endpoint:
        bucket = new_bucket(endpoint)
        proc = start_batchd(
            upstream=upstream.base_url,
            env={"BATCHD_STORAGE": f"s3://{bucket}/batchd", **env_for(endpoint)},
        )
        c = proc.client
        filler = "y" * 2000
        data = to_jsonl([chat_line(i, text=f"{i} {filler}") for i in range(6000)])
        up = c.uploads.upload_file_chunked(
            file=data, filename="s3.jsonl", bytes=len(data), mime_type="text/jsonl",
            purpose="batch", part_size=5 * 1024 * 1024,
        )  # fmt: skip
        assert up.status == "completed" and up.file is not None
        assert c.files.content(up.file.id).content == data
        keys = [o["Key"] for o in client(endpoint).list_objects_v2(Bucket=bucket)["Contents"]]  # type: ignore[attr-defined]
        assert keys == [f"batchd/files/{up.file.id}"]  # the parts are gone
        batch = c.batches.create(
            input_file_id=up.file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = wait_batch(c, batch.id, timeout=120)
        assert done.status == "completed" and done.request_counts is not None
        assert done.request_counts.completed == 6000
        proc.stop()
