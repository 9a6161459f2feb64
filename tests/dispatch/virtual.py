"""A continuous-batching server in simulated time, driving a Controller directly.

Each step admits waiting requests (FIFO) up to ``cap`` running sequences, gives each
running sequence one token and costs ``a + b * running`` seconds. The client keeps
``controller.limit`` tries in flight (as the executor does) until ``total`` requests
are done. No real time passes: a run of thousands of requests takes milliseconds.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field

from batchd.engine.capacity import Controller
from batchd.engine.tries import Ticket


@dataclass
class Req:
    ticket: Ticket
    tokens_left: int
    sent: float
    admitted: float | None = None


@dataclass
class VirtualServer:
    cap: int
    a: float
    b: float
    tokens: int = 50
    reject_above: int | None = None
    """Answer 429 to a request arriving while this many are already in flight."""
    others: Callable[[float], int] = lambda t: 0
    """Sequences someone else runs at time t (they take slots and step time)."""
    load_every: float | None = None
    """Feed the controller the server's (running, waiting) this often (vLLM's /metrics)."""
    now: float = 0.0
    steps: list[tuple[float, float, int]] = field(default_factory=list)
    """(time, step seconds, sequences running) per step."""
    gauges: list[tuple[int, int]] = field(default_factory=list)
    waiting: collections.deque[Req] = field(default_factory=collections.deque)
    running: list[Req] = field(default_factory=list)
    refused: int = 0
    tries: int = 0
    queue_waits: list[float] = field(default_factory=list)
    limits: list[tuple[float, float]] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def run(self, ctl: Controller, total: int, *, until: float = 1e9) -> float:
        """Run ``total`` requests through ``ctl``; returns the simulated seconds taken."""
        self._done = 0
        self._sent = 0
        self._total = total
        next_load = 0.0
        while self._done < total and self.now < until:
            if self.load_every is not None and self.now >= next_load:
                others_now = self.others(self.now)
                running = min(self.cap, len(self.running) + others_now)
                self.gauges.append((running, len(self.waiting)))
                ctl.on_load(running, len(self.waiting))
                next_load = self.now + self.load_every
            self._top_up(ctl)
            others = self.others(self.now)
            room = self.cap - others - len(self.running)
            while self.waiting and room > 0:
                req = self.waiting.popleft()
                req.admitted = self.now
                self.queue_waits.append(self.now - req.sent)
                self.running.append(req)
                room -= 1
            load = len(self.running) + others
            step = self.a + self.b * load
            self.steps.append((self.now, step, load))
            self.now += step
            self.limits.append((self.now, ctl.limit))
            still = []
            for req in self.running:
                req.tokens_left -= 1
                if req.tokens_left == 0:
                    ctl.done(req.ticket, status=200, tokens=self.tokens)
                    self._done += 1
                    # The executor's gate hands the freed room on at once.
                    self._top_up(ctl)
                else:
                    still.append(req)
            self.running = still
        return self.now

    def _top_up(self, ctl: Controller) -> None:
        while self._sent < self._total and ctl.in_flight < int(ctl.window):
            if self.now < ctl.paused_until:
                return
            ticket = ctl.send()
            self.tries += 1
            if self.reject_above is not None and ctl.in_flight > self.reject_above:
                self.refused += 1
                ctl.done(ticket, status=429, retry_after=None)
                continue
            self.waiting.append(Req(ticket, self.tokens, self.now))
            self._sent += 1

    def best_fixed(self, total: int, levels: list[int]) -> float:
        """Shortest time over fixed concurrency levels (fresh servers, same profile)."""
        times = []
        for level in levels:
            twin = VirtualServer(self.cap, self.a, self.b, self.tokens, self.reject_above)
            ctl = Controller(level, adaptive=False, clock=twin.clock)
            times.append(twin.run(ctl, total))
        return min(times)
