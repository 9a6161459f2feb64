"""A simulated continuous-batching model server (as vLLM and SGLang schedule), over HTTP.

Each step admits waiting requests (FIFO, or by ``priority`` when honoured) up to
``cap`` running sequences, gives every running sequence one token and lasts
``a + b * running`` seconds (plus ``miss_cost`` per admitted request whose prompt
prefix is not in the prefix cache). The rest wait. Time is real (``asyncio.sleep``),
CPU is not burnt, so it is cheap on a shared machine. Options:

- ``reject_above``: answer 429 (``Retry-After``) to a request arriving while that
  many are already in the server (a rate-limited provider);
- ``metrics``: serve ``/metrics`` with vLLM's gauges ``vllm:num_requests_running``
  and ``vllm:num_requests_waiting`` in Prometheus text format;
- ``honour_priority``: order the queue by the body's ``priority`` (lower first, as
  vLLM's ``--scheduling-policy priority``), preempting lower-priority running
  sequences for higher-priority waiting ones;
- ``prefix_cache``: how many distinct prompt prefixes (the system message, or the
  first ``prefix_chars`` of the prompt) stay cached, least recently used evicted.

``GET /sim/stats`` returns counters and time-averaged load; ``POST /sim/reset``
clears them. Run standalone: ``python tests/dispatch/sim_server.py --cap 4 --a 0.03 --b 0.02``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class SimConfig:
    cap: int = 32
    a: float = 0.010
    b: float = 0.0003
    default_tokens: int = 16
    reject_above: int | None = None
    retry_after: float = 0.05
    metrics: bool = False
    honour_priority: bool = False
    prefix_cache: int = 0
    prefix_chars: int = 200
    miss_cost: float = 0.0


@dataclass
class SimStats:
    requests: int = 0
    refused: int = 0
    completed: int = 0
    tokens: int = 0
    queue_wait_sum: float = 0.0
    prefix_hits: int = 0
    prefix_misses: int = 0
    priorities: collections.Counter[str] = field(default_factory=collections.Counter)
    running_area: float = 0.0
    waiting_area: float = 0.0
    busy_seconds: float = 0.0
    max_in_server: int = 0


@dataclass(eq=False)
class _Seq:
    tokens_left: int
    tokens: int
    priority: int
    arrived: float
    order: int
    prefix: str
    done: asyncio.Future[None]
    admitted: float | None = None


class SimServer:
    def __init__(self, config: SimConfig | None = None, *, port: int | None = None) -> None:
        self.config = config or SimConfig()
        self.stats = SimStats()
        self.port = port or _free_port()
        self._waiting: list[_Seq] = []
        self._running: list[_Seq] = []
        self._cache: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._order = itertools.count()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._last = time.monotonic()

    # --------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/sim/stats", self._stats)
        app.router.add_post("/sim/reset", self._reset)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._wake = asyncio.Event()
        self._stepper = asyncio.create_task(self._step_loop())

    async def _on_cleanup(self, app: web.Application) -> None:
        self._stepper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._stepper

    def start(self) -> SimServer:
        """Serve in a thread of its own (its own event loop)."""

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._runner = web.AppRunner(self.app())
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            loop.run_until_complete(site.start())
            self._ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="sim-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            runner = self._runner
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the server's loop (to read or change its state safely)."""
        assert self._loop is not None
        fut: asyncio.Future[Any] = asyncio.run_coroutine_threadsafe(_call(fn), self._loop)  # type: ignore[assignment]
        return fut.result(10)

    def reset(self, config: SimConfig | None = None) -> None:
        def do() -> None:
            if config is not None:
                self.config = config
            self.stats = SimStats()
            self._cache.clear()
            self._last = time.monotonic()

        self.call(do)

    def snapshot(self) -> dict[str, Any]:
        return self.call(self._snapshot)  # type: ignore[no-any-return]

    # ---------------------------------------------------------------- engine

    def _account(self) -> None:
        now = time.monotonic()
        dt = now - self._last
        self._last = now
        self.stats.running_area += len(self._running) * dt
        self.stats.waiting_area += len(self._waiting) * dt
        if self._running:
            self.stats.busy_seconds += dt

    def _admit(self) -> int:
        cfg = self.config
        if cfg.honour_priority:
            self._waiting.sort(key=lambda s: (s.priority, s.order))
            # Preempt: a waiting sequence outranks the worst running one.
            while self._waiting and len(self._running) >= cfg.cap:
                worst = max(self._running, key=lambda s: (s.priority, s.order))
                if worst.priority <= self._waiting[0].priority:
                    break
                self._running.remove(worst)
                self._waiting.append(worst)
                self._waiting.sort(key=lambda s: (s.priority, s.order))
        misses = 0
        now = time.monotonic()
        while self._waiting and len(self._running) < cfg.cap:
            seq = self._waiting.pop(0)
            if seq.admitted is None:
                seq.admitted = now
                self.stats.queue_wait_sum += now - seq.arrived
                if cfg.prefix_cache:
                    if seq.prefix in self._cache:
                        self._cache.move_to_end(seq.prefix)
                        self.stats.prefix_hits += 1
                    else:
                        misses += 1
                        self.stats.prefix_misses += 1
                        self._cache[seq.prefix] = None
                        while len(self._cache) > cfg.prefix_cache:
                            self._cache.popitem(last=False)
            self._running.append(seq)
        return misses

    async def _step_loop(self) -> None:
        assert self._wake is not None
        while True:
            if not self._running and not self._waiting:
                self._account()
                self._wake.clear()
                await self._wake.wait()
                self._account()
            misses = self._admit()
            cfg = self.config
            await asyncio.sleep(cfg.a + cfg.b * len(self._running) + misses * cfg.miss_cost)
            self._account()
            still = []
            for seq in self._running:
                seq.tokens_left -= 1
                if seq.tokens_left <= 0:
                    self.stats.completed += 1
                    self.stats.tokens += seq.tokens
                    if not seq.done.done():
                        seq.done.set_result(None)
                else:
                    still.append(seq)
            self._running = still

    # ------------------------------------------------------------------ HTTP

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        cfg = self.config
        self.stats.requests += 1
        self.stats.priorities[str(body.get("priority", "absent"))] += 1
        in_server = len(self._running) + len(self._waiting)
        if cfg.reject_above is not None and in_server >= cfg.reject_above:
            self.stats.refused += 1
            error = {"error": {"message": "rate limited", "type": "rate_limit_error"}}
            return web.json_response(
                error, status=429, headers={"Retry-After": f"{cfg.retry_after:g}"}
            )
        self.stats.max_in_server = max(self.stats.max_in_server, in_server + 1)
        tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
        tokens = tokens or cfg.default_tokens
        self._account()
        seq = _Seq(
            tokens_left=tokens,
            tokens=tokens,
            priority=int(body.get("priority", 0)) if cfg.honour_priority else 0,
            arrived=time.monotonic(),
            order=next(self._order),
            prefix=_prefix(body, cfg.prefix_chars),
            done=asyncio.get_running_loop().create_future(),
        )
        self._waiting.append(seq)
        assert self._wake is not None
        self._wake.set()
        await seq.done
        answer = {
            "id": f"chatcmpl-sim{seq.order}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "sim"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "x " * min(tokens, 8)},
                    "finish_reason": "length",
                }
            ],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": tokens,
                "total_tokens": 10 + tokens,
            },
        }
        return web.json_response(answer)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "sim", "object": "model"}]})

    async def _metrics(self, request: web.Request) -> web.Response:
        if not self.config.metrics:
            return web.Response(status=404, text="404: Not Found")
        labels = 'engine="0",model_name="sim"'
        text = (
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{{{labels}}} {float(len(self._running))}\n"
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{{{labels}}} {float(len(self._waiting))}\n"
        )
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    def _snapshot(self) -> dict[str, Any]:
        self._account()
        s = asdict(self.stats)
        s["priorities"] = dict(self.stats.priorities)
        s["running_now"] = len(self._running)
        s["waiting_now"] = len(self._waiting)
        return s

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._snapshot())

    async def _reset(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        if body:
            self.config = SimConfig(**body)
        self.stats = SimStats()
        self._cache.clear()
        self._last = time.monotonic()
        return web.json_response({"ok": True})


async def _call(fn: Any) -> Any:
    return fn()


def _prefix(body: dict[str, Any], chars: int) -> str:
    messages = body.get("messages") or []
    if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system":
        return str(messages[0].get("content", ""))
    text = json.dumps(messages)[:chars] if messages else str(body.get("prompt", ""))[:chars]
    return text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config", default="{}", help="SimConfig fields as JSON")
    args = parser.parse_args()
    config = SimConfig(**json.loads(args.config))
    server = SimServer(config, port=args.port or None)
    web.run_app(server.app(), host="127.0.0.1", port=server.port, print=None)


if __name__ == "__main__":
    main()
