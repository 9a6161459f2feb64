"""Keep-alive HTTP/1.1 connections for the hot path: one POST per request line.

Sending is most of what batchd does per request. This pool (asyncio protocols and
httptools, the parser uvicorn uses) takes about 1/2.6 of the CPU per POST of aiohttp's
``ClientSession`` against the same nginx fixed answer, 64 in flight, on this project's
2-core machine (bench/bench_http_client.py: 55-72 against 141-187 µs in one run, 48-53
against 125-144 µs in another). It does only
what a batch's sends need: POST a JSON body to one origin (http or https), HTTP/1.1
keep-alive, answers framed by ``Content-Length``, chunked or by the connection's end,
and a total timeout. Model lists and load gauges stay on aiohttp (backends/http.py).

The timeout is a deadline on each connection that one sweep checks while any is
busy (every :func:`sweep_interval`), not a timer per request: ``asyncio.timeout``
per POST (a timer pushed on the loop's heap and cancelled again) was 7% of the engine
loop's CPU in a profile of bench/bench_service.py against nginx.

A connection whose request was cancelled or timed out mid-answer is closed, never
reused. A keep-alive connection the server closed while it sat idle fails before any
byte of an answer comes back; that request is sent once more on a new connection
(as browsers and aiohttp's own retry of a stale connection do), so an idle timeout
on the server never costs a retry with backoff.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

WANTED = frozenset({b"x-request-id", b"retry-after", b"retry-after-ms"})
"""The answer headers batchd reads; the others are not kept."""
MAX_IDLE = 4096


def sweep_interval(timeout: float) -> float:
    """Seconds between deadline checks: a twentieth of the timeout, 10 ms to 1 s, so
    a request fails at most that late."""
    return min(1.0, max(0.01, timeout / 20))


class ConnectionClosed(ConnectionError):
    """The connection ended before a whole answer came back."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]
    """Only :data:`WANTED` ones, names in lower case."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request at a time on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.answered = False
        """Any byte of an answer to the current request has come back."""
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._body: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._framed = False
        self._head_done = False
        self._keep_alive = False
        self.deadline = 0.0
        """Loop time by which the current request must be answered."""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's too, which is not an asyncio.Transport subclass).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionClosed(f"unreadable answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._head_done and not self._framed:
            self._complete()  # an answer framed by the connection's end is whole now
        else:
            self._fail(ConnectionClosed(str(exc) if exc else "closed by the server"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key in (b"content-length", b"transfer-encoding"):
            self._framed = True
        if key in WANTED:
            self._headers[key.decode()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        # Asked here: the parser forgets once the next message begins.
        self._keep_alive = self._parser.should_keep_alive()
        self._complete()

    # use

    def send(self, data: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self.answered = False
        self._body = []
        self._headers = {}
        self._framed = self._head_done = self._keep_alive = False
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return waiter

    @property
    def reusable(self) -> bool:
        return not self.closed and self._keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            body = b"".join(self._body)
            waiter.set_result(Answer(self._parser.get_status_code(), body, self._headers))
        self._body = []

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def expire(self) -> None:
        """The deadline passed with no whole answer: fail the request, close."""
        self._fail(TimeoutError("no answer within the timeout"))
        self.close()


class ConnectionPool:
    """POSTs to one origin over reused connections (as many as are asked for at once)."""

    def __init__(self, base_url: str, *, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        default_port = self._port == (443 if parts.scheme == "https" else 80)
        host = self._host if default_port else f"{self._host}:{self._port}"
        if ":" in self._host and not default_port:
            host = f"[{self._host}]:{self._port}"  # an IPv6 literal
        fixed = {"Host": host, "Accept": "*/*", **headers}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self._timeout = timeout
        self._sweep_every = sweep_interval(timeout)
        self._sweep: asyncio.TimerHandle | None = None
        self._busy: set[_Connection] = set()
        self._idle: list[_Connection] = []
        self._heads: dict[str, bytes] = {}
        self._closed = False

    async def post(self, path: str, body: bytes) -> Answer:
        """POST ``body`` to ``path``; raises OSError (ConnectionClosed included) or
        TimeoutError when no whole answer came."""
        head = self._heads.get(path)
        if head is None:
            head = self._heads[path] = (
                f"POST {path} HTTP/1.1\r\n".encode("latin-1") + self._fixed + b"Content-Length: "
            )
        data = b"".join((head, str(len(body)).encode(), b"\r\n\r\n", body))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            conn, reused = await self._acquire(deadline)
            conn.deadline = deadline
            busy = self._busy
            busy.add(conn)
            if self._sweep is None:
                self._sweep = loop.call_later(self._sweep_every, self._expire)
            try:
                answer = await conn.send(data)
            except ConnectionClosed:
                conn.close()
                if reused and not conn.answered:
                    continue  # closed by the server while idle: once more, on a new one
                raise
            except BaseException:
                conn.close()  # cancelled or timed out mid-answer: never reused
                raise
            finally:
                busy.discard(conn)
            self._release(conn)
            return answer

    def _expire(self) -> None:
        """Fail the requests past their deadline; again in a moment while any is busy."""
        self._sweep = None
        if not self._busy:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in [c for c in self._busy if c.deadline <= now]:
            conn.expire()
        self._sweep = loop.call_later(self._sweep_every, self._expire)

    async def _acquire(self, deadline: float) -> tuple[_Connection, bool]:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(deadline):  # new connections only: rare
            _, conn = await loop.create_connection(
                _Connection,
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
            )
        return conn, False

    def _release(self, conn: _Connection) -> None:
        if conn.reusable and not self._closed and len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in self._idle:
            conn.close()
        self._idle.clear()
