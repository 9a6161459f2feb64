"""A real webhook receiver for tests: an HTTP server on a thread that records deliveries.

``fail_first`` makes the first N deliveries answer 500; ``hang`` makes every
delivery wait that many seconds before answering (a stuck receiver).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness import wait_for


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


@dataclass
class Receiver:
    fail_first: int = 0
    hang: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if receiver.hang:
                    time.sleep(receiver.hang)
                with receiver._lock:
                    status = 500 if len(receiver.deliveries) < receiver.fail_first else 204
                    receiver.deliveries.append(
                        Delivery(
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            status,
                            time.monotonic(),
                        )
                    )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def accepted(self) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.status < 300]

    def wait_events(self, n: int, timeout: float = 20.0) -> list[Delivery]:
        def enough() -> list[Delivery] | None:
            got = self.accepted()
            return got if len(got) >= n else None

        return list(wait_for(enough, timeout=timeout, what=f"{n} webhook deliveries"))
