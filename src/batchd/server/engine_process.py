"""The engine in a child process of the API server (``engine_process``, the default).

Why: in one process the API and the engine share one event loop and one core, so a
busy batch makes every API call wait behind request sending, result commits and
output writing (measured in bench/bench_load.py: retrieve p99 over 100 ms). In a
child the engine has a core of its own, and the API answers from the store.

The child (server/engine_child.py) is ``batchd worker`` in all but name: it claims
work from the same database (SQLite across two processes is safe: WAL, busy
timeouts, and claims are conditional updates), so nothing here knows about
batches. This side starts it, wakes it when a batch is created or cancelled,
replays its events into this process's metrics and webhooks, starts it again if it
dies (its leases are freed at once: its pid is gone), and on shutdown sends it
SIGTERM and waits for its drain. It cannot outlive this process (see the child).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from batchd.engine.events import Observers
from batchd.server.engine_link import WAKE, EventReplayer
from batchd.settings import Settings
from batchd.store.records import BatchRecord

log = logging.getLogger("batchd.server")

MAX_RESTART_DELAY = 30.0
READY_TIMEOUT = 120.0
"""Seconds start-up waits for the child's worker (embedded models may load first)."""
STABLE_SECONDS = 60.0
"""A child that ran this long before dying is restarted after the shortest delay."""


class EngineProcess:
    def __init__(
        self,
        settings: Settings,
        *,
        lookup: Callable[[str], Awaitable[BatchRecord | None]],
        observers: Observers | None = None,
        sibling: int = 0,
    ) -> None:
        self.observers = observers or Observers()
        self._settings = settings
        self._sibling = sibling
        self._lookup = lookup
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._ready = asyncio.Event()
        # The exit status of a first child that never got ready.
        self._failed: asyncio.Future[object] | None = None
        self.starts = 0
        self.limits: dict[str, dict[str, Any]] = {}
        """The child's per-backend dispatch state, as it last sent it."""

    def _set_limits(self, snapshot: dict[str, Any]) -> None:
        self.limits = snapshot

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the child and wait until its worker runs.

        Raises RuntimeError when the first child exits before it is ready (a bad
        configuration, say), so the server fails at start-up as in one process.
        """
        self._failed = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(self._supervise(), name="engine-supervisor")
        ready: asyncio.Future[object] = asyncio.ensure_future(self._ready.wait())
        await asyncio.wait({ready, self._failed}, timeout=READY_TIMEOUT,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        ready.cancel()
        if self._failed.done():
            self._stopping = True
            await self._supervisor
            raise RuntimeError(
                f"the engine process exited at start-up (status {self._failed.result()})"
            )
        if not self._ready.is_set():
            log.error("the engine process is not ready after %.0fs", READY_TIMEOUT)

    def wake(self) -> None:
        """New work may be there (a batch was created or cancelled)."""
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return  # a child that starts finds the work at its first tick
        if not proc.stdin.is_closing():
            proc.stdin.write(WAKE)

    async def stop(self) -> None:
        """SIGTERM the child, wait for its drain, and stop watching it."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            # The child waits up to cancel_grace for requests in flight, then releases.
            try:
                await asyncio.wait_for(proc.wait(), self._settings.cancel_grace + 15)
            except TimeoutError:
                log.error("the engine process did not stop in time; killing it")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._supervisor is not None:
            # Let it read the child's last events; a supervisor waiting to restart a
            # dead child is simply stopped.
            await asyncio.wait({self._supervisor}, timeout=5)
            self._supervisor.cancel()
            with contextlib.suppress(BaseException):
                await self._supervisor

    async def _supervise(self) -> None:
        delay = self._settings.engine_restart_delay
        while not self._stopping:
            started = time.monotonic()
            try:
                code = await self._run_once()
            except Exception:
                log.exception("the engine process could not be started")
                code = None
            if self._failed is not None and self._failed.done():
                return
            if self._stopping:
                return
            if time.monotonic() - started >= STABLE_SECONDS:
                delay = self._settings.engine_restart_delay
            log.error("the engine process exited (status %s); restarting in %.1fs", code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY)

    async def _run_once(self) -> int:
        """Run one child until it exits; its events are replayed meanwhile."""
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "batchd.server.engine_child",
                str(os.getpid()),
                str(write_fd),
                str(self._sibling),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the child holds it now; EOF here when the child is gone
        self._proc = proc
        self.starts += 1
        if self._stopping:  # stop() came while this child was being started
            proc.send_signal(signal.SIGTERM)
        assert proc.stdin is not None
        proc.stdin.write(self._settings.model_dump_json().encode() + b"\n")
        log.info("engine process started (pid %d)", proc.pid)
        replayer = EventReplayer(
            self.observers, self._lookup, self._ready.set, on_limits=self._set_limits
        )
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**24)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                replayer.replay(line)
            code = await proc.wait()
            if not self._ready.is_set() and self._failed is not None and not self._failed.done():
                self._failed.set_result(code)
            await replayer.drain()
        finally:
            transport.close()
        return code


SUMMED_LIMITS = ("ceiling", "limit", "in_flight", "server_queue", "cuts")
"""What adds up over engine children (each holds its share); the rest is per server."""


class EngineProcesses:
    """``engine_processes`` children as one engine: started, woken and stopped together;
    their events feed one set of observers."""

    def __init__(
        self,
        settings: Settings,
        *,
        lookup: Callable[[str], Awaitable[BatchRecord | None]],
    ) -> None:
        self.observers = Observers()
        self.children = [
            EngineProcess(settings, lookup=lookup, observers=self.observers, sibling=i)
            for i in range(settings.engine_children)
        ]

    async def start(self) -> None:
        await asyncio.gather(*(child.start() for child in self.children))

    def limits_snapshot(self) -> dict[str, dict[str, Any]]:
        """Per backend, as ``Limits.snapshot`` says it: from the one child, or added up
        over several (each holds its share of the backend's ceiling)."""
        if len(self.children) == 1:
            return self.children[0].limits
        total: dict[str, dict[str, Any]] = {}
        for child in self.children:
            for name, snap in child.limits.items():
                into = total.get(name)
                if into is None:
                    total[name] = dict(snap)
                    continue
                for key in SUMMED_LIMITS:
                    into[key] = (into.get(key) or 0) + (snap.get(key) or 0)
        return total

    def wake(self) -> None:
        for child in self.children:
            child.wake()

    async def stop(self) -> None:
        await asyncio.gather(*(child.stop() for child in self.children))
