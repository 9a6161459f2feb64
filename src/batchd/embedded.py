"""batchd in this process: the server on a background thread, on a loopback port.

Used where a user has no server to point at (``batchd demo``, and ``batchd run``
without ``--base-url``): the same app, store and worker as ``batchd serve``.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from batchd.server.app import create_app
from batchd.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def embedded_api_key(data_dir: Path) -> str:
    """The in-process server's key: random, made once per data dir and kept there, so
    a restarted run (same tenant) finds its files and batches again."""
    path = data_dir / "embedded-api-key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = f"sk-batchd-{secrets.token_urlsafe(24)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


class EmbeddedServer:
    """batchd on a loopback port of this process.

    ``private`` (the default) makes it require a key that is never printed
    (:attr:`api_key`), so other local users cannot use it; ``private=False`` keeps
    the settings' keys as they are (an open server when there are none).
    """

    def __init__(self, settings: Settings, *, private: bool = True) -> None:
        self.port = free_port()
        if settings.api_keys:
            self.api_key = settings.api_keys[0]
        elif private:
            self.api_key = embedded_api_key(settings.data_dir)
        else:
            self.api_key = "batchd"
        keys = [self.api_key] if private and not settings.api_keys else settings.api_keys
        self.settings = settings.model_copy(
            update={"host": "127.0.0.1", "port": self.port, "api_keys": keys}
        )
        config = uvicorn.Config(
            create_app(self.settings),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, name="batchd-embedded", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> EmbeddedServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the embedded batchd server did not start")
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=60)
