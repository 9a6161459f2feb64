"""The engine child of ``batchd serve``: ``python -m batchd.server.engine_child PARENT_PID FD``.

Started by server/engine_process.py, never by hand. It reads its settings from the
first line of stdin, then runs one worker exactly as ``batchd worker`` does, with its
events sent to the parent on fd ``FD`` (server/engine_link.py). SIGTERM drains it.

It must never outlive the API process: a SIGKILLed server that left its engine
running would keep sending requests and writing results, and a restarted server
would then run a second engine on the same database. On Linux the kernel kills
it with the parent (``PR_SET_PDEATHSIG``); anywhere, end of file on stdin (the
parent's end closes when the parent dies, however it dies) ends it at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import sys

from batchd.engine.events import Observers
from batchd.engine.standalone import run_worker
from batchd.engine.worker import Worker
from batchd.server.engine_link import LIMITS_SECONDS, WAKE, EventForwarder
from batchd.server.logs import configure_logging
from batchd.settings import Settings

log = logging.getLogger("batchd.engine")

_PR_SET_PDEATHSIG = 1
PARENT_GONE = 70


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` exits (Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before the line above: then nobody would kill us.
    if os.getppid() != parent:
        os._exit(PARENT_GONE)


def read_settings(fd: int) -> Settings:
    """The first line on ``fd``; what follows it (wake-ups) is not needed yet."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 65536)
        if not chunk:
            os._exit(PARENT_GONE)
        data += chunk
    return Settings.model_validate_json(data.partition(b"\n")[0])


async def run(settings: Settings, events_fd: int, sibling: int = 0) -> None:
    loop = asyncio.get_running_loop()
    events = os.fdopen(events_fd, "wb", buffering=0)
    # A write transport buffers instead of blocking the engine when the parent is slow.
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, events)
    forwarder = EventForwarder(transport.write)

    def started(worker: Worker) -> None:
        # As in the API process: objects alive after start-up live as long as the
        # process, so the cyclic GC need not re-scan them on every collection.
        gc.collect()
        gc.freeze()
        os.set_blocking(0, False)
        loop.add_reader(0, _on_stdin, worker)
        forwarder.ready()
        loop.call_soon(_send_limits, loop, forwarder, worker)

    try:
        await run_worker(
            settings,
            observers=Observers([forwarder]),
            on_start=started,
            siblings=settings.engine_children,
            sibling=sibling,
        )
    finally:
        forwarder.flush()
        transport.close()


def _send_limits(
    loop: asyncio.AbstractEventLoop, forwarder: EventForwarder, worker: Worker
) -> None:
    """The dispatch state, once a second: the API process shows it (metrics, /ui)."""
    snapshot = worker.limits.snapshot()
    if snapshot:
        forwarder.limits(snapshot)
    loop.call_later(LIMITS_SECONDS, _send_limits, loop, forwarder, worker)


def _on_stdin(worker: Worker) -> None:
    try:
        data = os.read(0, 4096)
    except BlockingIOError:
        return
    if not data:
        log.error("the API process is gone; engine exits")
        os._exit(PARENT_GONE)
    if WAKE in data:
        worker.wake()


def main() -> None:
    parent, events_fd = int(sys.argv[1]), int(sys.argv[2])
    sibling = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    die_with_parent(parent)
    settings = read_settings(0)
    if settings.engine_nice:
        # Where the API and the engine compete for a core, the API's answers come
        # first: the engine only gets a batch done sooner, a client waits on the API.
        os.nice(settings.engine_nice)
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(run(settings, events_fd, sibling))


if __name__ == "__main__":
    main()
