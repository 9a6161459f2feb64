"""A real OpenAI-shaped model server for tests and benchmarks, with switchable faults.

It answers ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``/v1/moderations`` and ``/v1/responses`` instantly and deterministically (the
answer echoes the request), over real HTTP. Faults are set on :class:`Faults`:

- ``fail_first``: each distinct request fails this many times (status
  ``fail_status``) before it succeeds, so retries are observable exactly;
- ``error_rate`` with ``error_kinds``: a random share of attempts fails with a
  500, a 429 with ``Retry-After``, a dropped connection, a slow answer
  (``slow_seconds``), or one that never comes in time (``timeout``: it waits
  ``timeout_seconds``, meant to be past the client's timeout);
- ``reject_marker``: requests whose text contains it get a 400 (never retried);
- ``delay``: seconds every answer waits (slow upstream).

Every request is counted per distinct text (``attempts``), so tests can prove a
line was sent exactly once, and kept as received (``bodies``). Answers name the
model the request named (``null`` when it named none), never a default of their own.
Run standalone: ``python tests/upstream_server.py --port 9000``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Faults:
    fail_first: int = 0
    fail_status: int = 500
    error_rate: float = 0.0
    error_kinds: tuple[str, ...] = ("500", "429", "drop", "slow")
    retry_after: float = 0.05
    slow_seconds: float = 2.0
    timeout_seconds: float = 30.0
    reject_marker: str | None = None
    delay: float = 0.0
    max_concurrency: int | None = None
    """Answer 429 to requests beyond this many in flight (a rate-limited upstream)."""
    seed: int = 1234
    answer: Callable[[str], str] | None = None
    """Chat answer text for a request text (default ``echo: <text>``)."""
    length_marker: str | None = None
    """Chat requests whose text contains it finish with ``finish_reason: length``."""


@dataclass
class Stats:
    attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    successes: collections.Counter[str] = field(default_factory=collections.Counter)
    total: int = 0
    rejected_429: int = 0
    inflight: int = 0
    peak_inflight: int = 0
    inflight_by_model: collections.Counter[str] = field(default_factory=collections.Counter)
    peak_by_model: collections.Counter[str] = field(default_factory=collections.Counter)
    """The most requests naming each ``model`` that were in flight at once."""
    times: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    """Arrival time (``time.monotonic()``) of every attempt, per distinct text."""
    paths: collections.Counter[str] = field(default_factory=collections.Counter)
    """Requests per URL path."""
    auth: collections.Counter[str] = field(default_factory=collections.Counter)
    """``Authorization`` headers seen (``""`` when absent)."""
    bodies: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    """Request bodies as received, per URL path."""


def _text_of(body: dict[str, Any]) -> str:
    if "messages" in body:
        return " ".join(str(m.get("content", "")) for m in body["messages"])
    for key in ("prompt", "input"):
        if key in body:
            value = body[key]
            return value if isinstance(value, str) else json.dumps(value)
    return json.dumps(body, sort_keys=True)


def _answer(
    path: str, body: dict[str, Any], text: str, faults: Faults | None = None
) -> dict[str, Any]:
    # The model the request named, as sent: never one made up here, so a test sees
    # whether batchd sent one at all.
    model = body.get("model")
    words = max(1, len(text.split()))
    now = int(time.time())
    if path.endswith("/chat/completions"):
        return {
            "id": "chatcmpl-" + hashlib.md5(text.encode()).hexdigest()[:12],
            "object": "chat.completion",
            "created": now,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": faults.answer(text)
                        if faults and faults.answer
                        else f"echo: {text}",
                    },
                    "logprobs": None,
                    "finish_reason": "length"
                    if faults and faults.length_marker and faults.length_marker in text
                    else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": words,
                "completion_tokens": words + 1,
                "total_tokens": 2 * words + 1,
            },
        }
    if path.endswith("/completions"):
        return {
            "id": "cmpl-x",
            "object": "text_completion",
            "created": now,
            "model": model,
            "choices": [
                {"index": 0, "text": f"echo: {text}", "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": words,
                "completion_tokens": words + 1,
                "total_tokens": 2 * words + 1,
            },
        }
    if path.endswith("/embeddings"):
        digest = hashlib.sha256(text.encode()).digest()
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": 0, "embedding": [b / 255 for b in digest[:8]]}
            ],
            "model": model,
            "usage": {"prompt_tokens": words, "total_tokens": words},
        }
    if path.endswith("/moderations"):
        return {
            "id": "modr-x",
            "model": model,
            "results": [{"flagged": False, "categories": {}, "category_scores": {}}],
        }
    return {
        "id": "resp_x",
        "object": "response",
        "created_at": now,
        "model": model,
        "status": "completed",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": f"echo: {text}"}],
            }
        ],
        "usage": {"input_tokens": words, "output_tokens": words + 1, "total_tokens": 2 * words + 1},
    }


class UpstreamServer:
    """The server; ``start()`` runs it on a background thread."""

    def __init__(self, faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0):
        self.faults = faults or Faults()
        self.stats = Stats()
        self.host = host
        self.port = port
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def reset(self, faults: Faults | None = None) -> None:
        with self._lock:
            self.faults = faults or Faults()
            self.stats = Stats()
            self._rng = random.Random(self.faults.seed)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/{tail:.*}", self._handle)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": "test-model", "object": "model", "created": 0, "owned_by": "upstream"}
                ],
            }
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return web.json_response(
                {
                    "error": {
                        "message": "bad json",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
                status=400,
            )
        text = _text_of(body)
        f = self.faults
        stats = self.stats
        with self._lock:
            stats.total += 1
            stats.attempts[text] += 1
            stats.times[text].append(time.monotonic())
            stats.paths[request.path] += 1
            stats.auth[request.headers.get("Authorization", "")] += 1
            stats.bodies[request.path].append(body)
            attempt = stats.attempts[text]
            roll = self._rng.random()
            kind = self._rng.choice(f.error_kinds) if f.error_kinds else "500"
        if f.max_concurrency is not None and stats.inflight >= f.max_concurrency:
            stats.rejected_429 += 1
            return web.json_response(
                {
                    "error": {
                        "message": "Rate limit reached",
                        "type": "rate_limit_error",
                        "param": None,
                        "code": "rate_limit_exceeded",
                    }
                },
                status=429,
                headers={"Retry-After": str(f.retry_after)},
            )
        model = str(body.get("model"))
        stats.inflight += 1
        stats.peak_inflight = max(stats.peak_inflight, stats.inflight)
        stats.inflight_by_model[model] += 1
        stats.peak_by_model[model] = max(stats.peak_by_model[model], stats.inflight_by_model[model])
        try:
            if f.delay:
                await asyncio.sleep(f.delay)
            if f.reject_marker and f.reject_marker in text:
                return web.json_response(
                    {
                        "error": {
                            "message": "Rejected by test upstream",
                            "type": "invalid_request_error",
                            "param": "messages",
                            "code": "content_rejected",
                        }
                    },
                    status=400,
                )
            if attempt <= f.fail_first:
                return web.json_response(
                    {
                        "error": {
                            "message": "Injected failure",
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    },
                    status=f.fail_status,
                    headers={"Retry-After": str(f.retry_after)} if f.fail_status == 429 else None,
                )
            if roll < f.error_rate:
                if kind == "500":
                    return web.json_response(
                        {
                            "error": {
                                "message": "boom",
                                "type": "server_error",
                                "param": None,
                                "code": None,
                            }
                        },
                        status=500,
                    )
                if kind == "429":
                    return web.json_response(
                        {
                            "error": {
                                "message": "slow down",
                                "type": "rate_limit_error",
                                "param": None,
                                "code": "rate_limit_exceeded",
                            }
                        },
                        status=429,
                        headers={"Retry-After": str(f.retry_after)},
                    )
                if kind == "drop":
                    assert request.transport is not None
                    request.transport.close()
                    raise ConnectionResetError("dropped by test upstream")
                if kind == "slow":
                    await asyncio.sleep(f.slow_seconds)
                if kind == "timeout":
                    await asyncio.sleep(f.timeout_seconds)
            with self._lock:
                stats.successes[text] += 1
            return web.json_response(
                _answer(request.path, body, text, f), headers={"x-request-id": f"req_{stats.total}"}
            )
        finally:
            stats.inflight -= 1
            stats.inflight_by_model[model] -= 1

    # ------------------------------------------------------------ running

    def start(self) -> UpstreamServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._runner = web.AppRunner(self.app(), access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="upstream")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    server = UpstreamServer(Faults(delay=args.delay), host=args.host, port=args.port)
    web.run_app(server.app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
