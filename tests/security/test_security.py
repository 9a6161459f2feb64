"""Security: tenant isolation on every endpoint, constant-time key checks, upload
limits enforced while streaming, ids that never become paths, secrets that never
reach the logs, and request bodies that only ever go to a configured backend.

Where the socket or the process is the point (a chunked upload cut short, raw paths
as a client may send them, what a process writes to its log) the cases drive a real
``batchd serve``; the others run against the app in this process (tests/inproc.py).
"""

from __future__ import annotations

import base64
import json
import os
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchd.errors import AuthenticationFailed
from batchd.server import auth
from harness import (
    BatchdProcess,
    StartBatchd,
    chat_line,
    create_batch,
    run_batch,
    upload,
    wait_batch,
    wait_for,
)
from inproc import InProcessBatchd, StartApi
from observability.receiver import Receiver
from upstream_server import Faults, UpstreamServer


def json_of(raw: bytes) -> Any:
    return json.loads(raw)


# ------------------------------------------------------------ tenant isolation


@pytest.fixture
def two_tenants(start_api: StartApi, upstream: UpstreamServer) -> InProcessBatchd:
    return start_api(upstream=upstream.base_url, api_keys=["alice", "mallory"], api_key="alice")


def test_tenant_isolation_on_every_endpoint(two_tenants: InProcessBatchd) -> None:
    server = two_tenants
    alice = server.client
    done = run_batch(alice, [chat_line(1), chat_line(2, text="x")])
    assert done.status == "completed"
    failed = wait_batch(alice, create_batch(alice, [b"not json"]).id)
    assert failed.status == "failed"
    running = create_batch(alice, [chat_line(i) for i in range(3)])
    files = [done.input_file_id, done.output_file_id]
    batches = [done.id, failed.id, running.id]

    def as_mallory(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        status, _, raw = server.http(
            method,
            path,
            body=data,
            headers={"Authorization": "Bearer mallory", "Content-Type": "application/json"},
        )
        return status, json_of(raw) if raw.startswith(b"{") else raw

    for fid in files:
        for method, path in (
            ("GET", f"/v1/files/{fid}"),
            ("GET", f"/v1/files/{fid}/content"),
            ("DELETE", f"/v1/files/{fid}"),
        ):
            status, body = as_mallory(method, path)
            assert status == 404, (method, path, body)
            assert body["error"]["code"] == "file_not_found"
    for bid in batches:
        for method, path in (
            ("GET", f"/v1/batches/{bid}"),
            ("POST", f"/v1/batches/{bid}/cancel"),
            ("GET", f"/ui/api/batches/{bid}"),
            ("GET", f"/ui/api/batches/{bid}/errors"),
        ):
            status, body = as_mallory(method, path)
            assert status == 404, (method, path, body)
    # Lists are empty for mallory, whatever cursor is passed (alice's ids included).
    for path in ("/v1/files", "/v1/batches", "/ui/api/batches"):
        for query in ("", f"?after={files[0]}", f"?after={batches[0]}", "?limit=100"):
            status, body = as_mallory("GET", path + query)
            assert status == 200, (path, query, body)
            assert body["data"] == [], (path, query)
    status, body = as_mallory("GET", "/v1/files?purpose=batch_output&order=asc")
    assert body["data"] == []
    # A batch from alice's file: created and failed at once, exactly as for a file that
    # does not exist (as OpenAI does), and it is mallory's, not alice's.
    for fid in files:
        status, body = as_mallory(
            "POST",
            "/v1/batches",
            {"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        )
        assert status == 200 and body["status"] == "failed", body
        assert body["errors"]["data"][0]["message"] == (
            f"Cannot find file {fid}, or this API key does not have access to it."
        )
        assert body["id"] not in {b.id for b in alice.batches.list().data}
    # Alice's objects are untouched and still hers.
    assert alice.files.retrieve(done.output_file_id).id == done.output_file_id
    assert "echo: hello 1" in alice.files.content(done.output_file_id).text
    assert alice.batches.retrieve(running.id).status != "cancelling"
    assert {b.id for b in alice.batches.list().data} == set(batches)
    # And alice cannot see what mallory makes.
    mallory = server.make_client(api_key="mallory")
    mf = upload(mallory, [chat_line(9)])
    assert mf.id not in {f.id for f in alice.files.list().data}
    status, _, _ = server.http("GET", f"/v1/files/{mf.id}")
    assert status == 404


def test_key_comparison_is_constant_time_over_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    ring = auth.KeyRing(["first", "second", "third"])
    for presented, ok in (("first", True), ("third", True), ("nope", False), ("firs", False)):
        calls.clear()
        if ok:
            assert ring.tenant_for(f"Bearer {presented}") == auth.tenant_of(presented)
        else:
            with pytest.raises(AuthenticationFailed):
                ring.tenant_for(f"Bearer {presented}")
        # Every key is compared, through compare_digest, even after a match.
        assert sorted(b for _, b in calls) == [b"first", b"second", b"third"], presented
        assert all(a == presented.encode() for a, _ in calls)


# ------------------------------------------------------- streaming upload limits

LIMIT = 1024 * 1024


def _chunked_upload_until_answered(server: BatchdProcess, total: int) -> tuple[int, bytes]:
    """Send a chunked multipart upload of up to ``total`` bytes, 64 KiB at a time,
    stopping as soon as the server answers; returns (bytes sent, answer)."""
    boundary = b"limitbound"
    head = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
        b'filename="big.jsonl"\r\n\r\n'
    )
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        b"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + server.api_key.encode()
        + b"\r\nContent-Type: multipart/form-data; boundary="
        + boundary
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )

    def chunk(data: bytes) -> None:
        sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    chunk(head)
    sent = 0
    block = b"x" * 65536
    try:
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            chunk(block)
            sent += len(block)
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        return sent, _read_answer(sock)
    finally:
        sock.close()


def _read_answer(sock: socket.socket) -> bytes:
    """The whole HTTP answer: its head and then content-length bytes of body (the two
    may arrive in separate segments)."""
    sock.settimeout(10)
    answer = b""
    while True:
        head, sep, body = answer.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            if len(body) >= length:
                return answer
        try:
            more = sock.recv(65536)
        except ConnectionResetError:
            more = b""
        if not more:
            return answer
        answer += more


def test_upload_limit_is_enforced_while_streaming(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    server = start_batchd(
        upstream=upstream.base_url,
        env={"BATCHD_MAX_FILE_BYTES": str(LIMIT), "BATCHD_MAX_BATCH_FILE_BYTES": str(LIMIT)},
    )
    total = 256 * 1024 * 1024
    sent, answer = _chunked_upload_until_answered(server, total)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"file_too_large" in answer
    # Answered long before the body ended: at most the limit plus what socket
    # buffers on both sides can hold (a few MiB on loopback).
    assert sent < 32 * 1024 * 1024, sent
    # No partial file is left behind (waited for, not slept on: the part file goes
    # when the upload is refused), and nothing was listed.
    parts = server.data_dir / "tmp"
    wait_for(lambda: not list(parts.iterdir()), timeout=10, what=f"no part files in {parts}")
    leftovers = [p for p in server.data_dir.rglob("*") if p.is_file() and p.stat().st_size > LIMIT]
    assert leftovers == []
    assert server.client.files.list().data == []


# ------------------------------------------------------------ ids are not paths

EVIL_IDS = [
    "..",
    "../secret.jsonl",
    "..%2Fsecret.jsonl",
    "%2e%2e%2fsecret.jsonl",
    "%2e%2e",
    "..%5csecret.jsonl",
    "%2Fetc%2Fpasswd",
    "file-..%2F..%2Fsecret",
    "file-aaaaaaaa%00",
    "file-aaaaaaaa%2F..%2F..%2Fsecret",
    "batch_..%2F..%2Fsecret",
    "%EF%BC%8E%EF%BC%8E%EF%BC%8Fsecret",  # fullwidth dots and slash
    "%E2%80%A4%E2%80%A4%2Fsecret",  # one-dot leaders
    "file-%C0%AE%C0%AE",  # overlong UTF-8 dots
    "file-" + "a" * 5000,
]


def _tree(root: Path) -> dict[str, tuple[int, float]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime)
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith("-stderr.log")
    }


SECRET_MARK = "contents-of-the-secret-file-7f3a"
"""Written into a file outside the data dir: no answer may ever contain it."""


def assert_failed_unknown_file(status: int, raw: bytes, file_id: str) -> None:
    assert status == 200, (file_id, raw[:300])
    batch = json.loads(raw)
    assert batch["status"] == "failed" and batch["in_progress_at"] is None
    assert [e["code"] for e in batch["errors"]["data"]] == ["invalid_request"]
    assert SECRET_MARK.encode() not in raw


def test_ids_never_become_paths(
    start_batchd: StartBatchd, upstream: UpstreamServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps(chat_line(1, text=SECRET_MARK)) + "\n")
    server = start_batchd(upstream=upstream.base_url, data_dir=data_dir)
    real = run_batch(server.client, [chat_line(1)])
    outside = _tree(tmp_path.parent)
    outside = {p: v for p, v in outside.items() if not p.startswith(str(data_dir))}
    for evil in EVIL_IDS:
        for method, path in (
            ("GET", f"/v1/files/{evil}"),
            ("GET", f"/v1/files/{evil}/content"),
            ("DELETE", f"/v1/files/{evil}"),
            ("GET", f"/v1/batches/{evil}"),
            ("POST", f"/v1/batches/{evil}/cancel"),
            ("GET", f"/ui/api/batches/{evil}"),
            ("GET", f"/ui/api/batches/{evil}/errors"),
            ("GET", f"/v1/files?after={evil}"),
            ("GET", f"/v1/batches?after={evil}"),
        ):
            status, _, raw = server.http(method, path)
            assert status in (200, 400, 404, 405), (method, path, status, raw[:300])
            if status == 200:  # a list: the cursor matched nothing
                assert method == "GET" and "after=" in path
            assert SECRET_MARK.encode() not in raw
        body = {
            "input_file_id": evil.replace("%2F", "/").replace("%2f", "/"),
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        status, _, raw = server.http(
            "POST",
            "/v1/batches",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        # Never read as a path: the batch is created and fails at once (as OpenAI does).
        assert_failed_unknown_file(status, raw, body["input_file_id"])
    for absolute in (str(secret), str(secret).lstrip("/"), os.fspath(data_dir / "batchd.db")):
        body = {
            "input_file_id": absolute,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        status, _, raw = server.http(
            "POST",
            "/v1/batches",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert_failed_unknown_file(status, raw, absolute)
    # Nothing outside the data dir was read into a batch, changed or removed.
    after = {p: v for p, v in _tree(tmp_path.parent).items() if not p.startswith(str(data_dir))}
    assert after == outside
    assert secret.read_text() == json.dumps(chat_line(1, text=SECRET_MARK)) + "\n"
    # Every other batch failed at creation: none read a line or ran a request.
    others = [b for b in server.client.batches.list(limit=100).data if b.id != real.id]
    assert len(others) == len(server.client.batches.list(limit=100).data) - 1
    for b in others:
        assert b.status == "failed" and b.in_progress_at is None, b
        assert b.request_counts is not None and b.request_counts.total == 0
        assert b.output_file_id is None and b.error_file_id is None
    assert server.client.files.retrieve(real.output_file_id).id == real.output_file_id


# ------------------------------------------------------------ secrets in logs


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=1).start()  # one failed delivery: the retry path logs too
    yield r
    r.stop()


def test_secrets_never_logged(
    start_batchd: StartBatchd, upstream: UpstreamServer, receiver: Receiver
) -> None:
    api_keys = ["sk-client-" + "A1b2" * 8, "sk-other-" + "Z9y8" * 8]
    upstream_key = "sk-upstream-" + "Q7w6" * 8
    webhook_secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    server = start_batchd(
        upstream=upstream.base_url,
        api_key=api_keys[0],
        # From the environment: the harness writes the command line into the log file.
        env={
            "BATCHD_API_KEYS": ",".join(api_keys),
            "BATCHD_UPSTREAM_API_KEY": upstream_key,
            "BATCHD_LOG_LEVEL": "DEBUG",
            "BATCHD_WEBHOOK_URL": receiver.url,
            "BATCHD_WEBHOOK_SECRET": webhook_secret,
            "BATCHD_WEBHOOK_RETRY_BASE": "0.05",
            "BATCHD_WEBHOOK_RETRY_CAP": "0.1",
        },
    )
    upstream.reset(Faults(fail_first=1))  # a retry, so the retry path logs too
    c = server.client
    failed = run_batch(c, [chat_line(i) for i in range(5)] + [chat_line(9, model="")])
    assert failed.status == "failed"  # model "" : a validation failure, logged
    done = run_batch(c, [chat_line(i) for i in range(5)])
    assert done.status == "completed"
    assert upstream.stats.auth[f"Bearer {upstream_key}"] >= 5  # the key was really used
    server.make_client(api_key=api_keys[1]).batches.list()
    server.http("GET", "/v1/files", headers={"Authorization": "Bearer wrong-" + api_keys[0]})
    # The webhook path ran, signing with the secret and logging a failed try, a retry
    # and both deliveries, before the logs are read.
    events = receiver.wait_events(2)
    assert {json.loads(d.body)["data"]["id"] for d in events} == {failed.id, done.id}
    assert all(d.headers["webhook-signature"].startswith("v1,") for d in events)
    assert [d.status for d in receiver.deliveries] == [500, 204, 204]
    wait_for(
        lambda: server.logs().count(" delivered (try ") == 2,
        timeout=10,
        what="both webhook deliveries in the log",
    )
    server.terminate()
    logs = server.logs()
    assert "DEBUG" in logs, "not running at DEBUG level"
    assert "retrying in" in logs, "the webhook retry was not logged"
    for secret in [*api_keys, upstream_key, webhook_secret, webhook_secret.removeprefix("whsec_")]:
        assert secret not in logs, f"secret {secret[:10]}... in the logs"


# ------------------------------------------------- bodies stay on backends


def test_request_bodies_reach_only_configured_backends(
    start_api: StartApi, upstream: UpstreamServer
) -> None:
    foreign = UpstreamServer(Faults()).start()
    try:
        server = start_api(upstream=upstream.base_url)
        c = server.client
        for url in (
            foreign.base_url + "/chat/completions",
            f"//127.0.0.1:{foreign.port}/v1/chat/completions",
            f"http://127.0.0.1:{foreign.port}",
        ):
            line = {**chat_line(1), "url": url}
            b = wait_batch(c, create_batch(c, [chat_line(0), line]).id)
            assert b.status == "failed"
            assert [e.code for e in b.errors.data] == ["invalid_url"]
        # Body fields that name another server are passed through, never followed.
        line = chat_line(2)
        line["body"].update(
            base_url=foreign.base_url, api_base=foreign.base_url, url=foreign.base_url
        )
        line["base_url"] = foreign.base_url
        b = run_batch(c, [line])
        assert b.status == "completed"
        assert upstream.stats.successes["hello 2"] == 1
        assert foreign.stats.total == 0
    finally:
        foreign.stop()
