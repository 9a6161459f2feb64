"""The keep-alive HTTP/1.1 pool that batchd's sends go over (backends/pool.py).

Against a real TCP server written here, which reads each request and answers it with
raw bytes from a script: framing by Content-Length, chunked and by the connection's
end, keep-alive and ``Connection: close``, a server that closes an idle connection,
one that drops a request, garbage, and answers that never come.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from batchd.backends.base import BackendUnavailable
from batchd.backends.http import HttpBackend
from batchd.backends.pool import ConnectionClosed, ConnectionPool
from batchd.settings import BackendConfig

pytestmark = pytest.mark.anyio

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'

Script = Callable[[int, int, bytes], "bytes | None"]
"""(request number, connection number, body) -> raw answer, or None to close at once."""


@dataclass
class Scripted:
    script: Script
    port: int = 0
    connections: int = 0
    requests: list[tuple[int, bytes, dict[str, str]]] = field(default_factory=list)
    """(connection number, body, headers) of every request read, in order."""
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def requests_read(self, n: int) -> None:
        while len(self.requests) < n:
            self.arrived.clear()
            await self.arrived.wait()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((conn, body, headers))
                self.arrived.set()
                answer = self.script(len(self.requests), conn, body)
                if answer is None:
                    break
                if not answer:  # never answer: hold the connection until the client goes
                    await reader.read()
                    break
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer or (
                    b"Content-Length" not in answer and b"chunked" not in answer
                ):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], Scripted]]:
    servers: list[asyncio.Server] = []
    made: list[Scripted] = []

    def start(script: Script) -> Scripted:
        s = Scripted(script)
        made.append(s)
        return s

    async def open_all() -> None:
        for s in made:
            if not s.port:
                server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
                servers.append(server)
                s.port = server.sockets[0].getsockname()[1]

    start.open = open_all  # type: ignore[attr-defined]
    yield start
    for server in servers:
        server.close()
    for s in made:
        for w in s.writers:
            w.close()


async def started(serve: Callable[[Script], Scripted], script: Script) -> Scripted:
    s = serve(script)
    await serve.open()  # type: ignore[attr-defined]
    return s


def pool_for(s: Scripted, timeout: float = 5.0, **headers: str) -> ConnectionPool:
    return ConnectionPool(f"http://127.0.0.1:{s.port}/v1", headers=headers, timeout=timeout)


async def test_keep_alive_reuses_one_connection(serve: Callable[[Script], Scripted]) -> None:
    s = await started(serve, lambda n, c, b: OK)
    pool = pool_for(s, **{"Content-Type": "application/json", "Authorization": "Bearer k"})
    for i in range(5):
        answer = await pool.post("/v1/chat/completions", b'{"n":%d}' % i)
        assert (answer.status, answer.body) == (200, b'{"ok":true}')
    assert s.connections == 1
    assert [body for _, body, _ in s.requests] == [b'{"n":%d}' % i for i in range(5)]
    headers = s.requests[0][2]
    assert headers["host"] == f"127.0.0.1:{s.port}"
    assert headers["authorization"] == "Bearer k"
    assert headers["content-type"] == "application/json"
    pool.close()


async def test_many_at_once_open_as_many_connections(serve: Callable[[Script], Scripted]) -> None:
    s = await started(serve, lambda n, c, b: OK)
    pool = pool_for(s)
    answers = await asyncio.gather(*(pool.post("/v1/x", b"{}") for _ in range(20)))
    assert all(a.status == 200 for a in answers)
    again = await asyncio.gather(*(pool.post("/v1/x", b"{}") for _ in range(20)))
    assert all(a.status == 200 for a in again)
    assert s.connections == 20  # the second wave reused the first wave's connections
    pool.close()


async def test_chunked_answer_and_the_headers_batchd_reads(
    serve: Callable[[Script], Scripted],
) -> None:
    chunked = (
        b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n"
        b"x-request-id: req_abc\r\nRetry-After: 2\r\nretry-after-ms: 1500\r\nX-Other: y\r\n\r\n"
        b'5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
    )
    s = await started(serve, lambda n, c, b: chunked if n == 1 else OK)
    pool = pool_for(s)
    answer = await pool.post("/v1/x", b"{}")
    assert (answer.status, answer.body) == (429, b'{"a": 1}')
    assert answer.headers == {
        "x-request-id": "req_abc",
        "retry-after": "2",
        "retry-after-ms": "1500",
    }
    assert (await pool.post("/v1/x", b"{}")).status == 200
    assert s.connections == 1  # a chunked answer leaves the connection reusable
    pool.close()


async def test_an_answer_framed_by_the_connections_end(serve: Callable[[Script], Scripted]) -> None:
    unframed = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"whole":1}'
    s = await started(serve, lambda n, c, b: unframed)
    pool = pool_for(s)
    for _ in range(2):
        answer = await pool.post("/v1/x", b"{}")
        assert (answer.status, answer.body) == (200, b'{"whole":1}')
    assert s.connections == 2  # such a connection cannot carry another request
    pool.close()


async def test_connection_close_is_honoured(serve: Callable[[Script], Scripted]) -> None:
    closing = OK.replace(b"Content-Length", b"Connection: close\r\nContent-Length")
    s = await started(serve, lambda n, c, b: closing)
    pool = pool_for(s)
    for _ in range(3):
        assert (await pool.post("/v1/x", b"{}")).body == b'{"ok":true}'
    assert s.connections == 3
    pool.close()


async def test_a_request_dropped_on_a_reused_connection_is_sent_again_on_a_new_one(
    serve: Callable[[Script], Scripted],
) -> None:
    # The server closes the kept-alive connection as the second request arrives (an idle
    # timeout racing our send): no byte of an answer came, so it goes once more.
    s = await started(serve, lambda n, c, b: None if n == 2 else OK)
    pool = pool_for(s)
    assert (await pool.post("/v1/x", b"1")).status == 200
    assert (await pool.post("/v1/x", b"2")).status == 200
    assert [(conn, body) for conn, body, _ in s.requests] == [(1, b"1"), (1, b"2"), (2, b"2")]
    pool.close()


async def test_a_new_connection_that_drops_the_request_fails(
    serve: Callable[[Script], Scripted],
) -> None:
    s = await started(serve, lambda n, c, b: None)
    pool = pool_for(s)
    with pytest.raises(ConnectionClosed):
        await pool.post("/v1/x", b"{}")
    assert len(s.requests) == 1  # not sent twice: a new connection is not stale
    pool.close()


async def test_an_answer_cut_short_fails_and_is_not_sent_again(
    serve: Callable[[Script], Scripted],
) -> None:
    cut = b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial'
    s = await started(serve, lambda n, c, b: OK if n == 1 else cut)
    pool = pool_for(s)
    await pool.post("/v1/x", b"{}")
    # The script answers with 100 promised bytes and then the handler waits for the
    # next request; close the server side to cut the answer short.
    task = asyncio.create_task(pool.post("/v1/x", b"{}"))
    await s.requests_read(2)
    await asyncio.sleep(0.05)
    s.writers[-1].close()
    with pytest.raises(ConnectionClosed):
        await task
    assert len(s.requests) == 2  # part of an answer came: never sent again
    pool.close()


async def test_garbage_is_an_error_not_an_answer(serve: Callable[[Script], Scripted]) -> None:
    s = await started(serve, lambda n, c, b: b"SPDY/9 what\r\n\r\n")
    pool = pool_for(s)
    with pytest.raises(ConnectionClosed, match="unreadable answer"):
        await pool.post("/v1/x", b"{}")
    pool.close()


async def test_no_answer_times_out_and_the_connection_is_not_reused(
    serve: Callable[[Script], Scripted],
) -> None:
    s = await started(serve, lambda n, c, b: OK if n > 1 else b"")  # the first: nothing, ever
    pool = pool_for(s, timeout=0.3)
    with pytest.raises(TimeoutError):
        await pool.post("/v1/x", b"{}")
    assert (await pool.post("/v1/x", b"{}")).status == 200
    assert s.connections == 2
    pool.close()


async def test_each_request_has_its_own_deadline(serve: Callable[[Script], Scripted]) -> None:
    s = await started(serve, lambda n, c, b: b"")  # nothing is ever answered
    pool = pool_for(s, timeout=0.5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first = asyncio.create_task(pool.post("/v1/x", b"{}"))
    await s.requests_read(1)
    await asyncio.sleep(0.3)
    second = asyncio.create_task(pool.post("/v1/x", b"{}"))
    with pytest.raises(TimeoutError):
        await first
    assert loop.time() - t0 >= 0.5  # never before its deadline
    assert not second.done()  # sent 0.3 s later: its deadline has not passed yet
    with pytest.raises(TimeoutError):
        await second
    assert loop.time() - t0 >= 0.8
    pool.close()


async def test_a_cancelled_request_closes_its_connection(
    serve: Callable[[Script], Scripted],
) -> None:
    s = await started(serve, lambda n, c, b: OK if n > 1 else b"")
    pool = pool_for(s)
    task = asyncio.create_task(pool.post("/v1/x", b"{}"))
    await s.requests_read(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await pool.post("/v1/x", b"{}")).status == 200
    assert s.connections == 2  # a late answer to the cancelled request is never read
    pool.close()


async def test_backend_maps_failures_to_backend_unavailable(
    serve: Callable[[Script], Scripted],
) -> None:
    s = await started(serve, lambda n, c, b: None)
    backend = HttpBackend(BackendConfig(name="up", base_url=f"http://127.0.0.1:{s.port}/v1"))
    with pytest.raises(BackendUnavailable) as info:
        await backend.send("/v1/chat/completions", b"{}")
    assert info.value.kind == "connection_error" and "up: ConnectionClosed" in str(info.value)
    assert s.requests[0][2]["user-agent"] == "batchd"
    await backend.aclose()
    refused = HttpBackend(BackendConfig(name="gone", base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(BackendUnavailable, match="gone: ConnectionRefusedError"):
        await refused.send("/v1/chat/completions", b"{}")
    await refused.aclose()
