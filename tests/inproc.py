"""batchd's app in the test process, for API cases where the process boundary is not
the point.

:class:`InProcessBatchd` builds the app with ``create_app(settings)`` and serves it
through Starlette's ``TestClient``: an ``httpx2.Client`` whose transport calls the
ASGI app directly, running it (lifespan included: store, worker, webhooks) on an
event loop in a background thread for as long as the server is started. The
official ``openai`` SDK is handed that client as its ``http_client``, so requests
go through the SDK, httpx2 and the whole app exactly as over a socket, minus the
socket and the start-up of a Python process.

Settings come from the same place as in ``batchd serve``: ``load_settings`` with
flags as keyword overrides and ``BATCHD_*`` variables from ``env`` (the test
process's own ``BATCHD_*`` variables are hidden meanwhile, as the harness hides
them from a child process). The interface mirrors :class:`harness.BatchdProcess`
(``client``, ``make_client``, ``http``, ``data_dir``, ``restart``, ``logs``), so a
test can move between the two.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import openai
from starlette.testclient import TestClient

from batchd.server.app import create_app
from batchd.settings import Settings, load_settings
from harness import FAST_ENV

ROOT_URL = "http://batchd.test"
_ENV_LOCK = threading.Lock()


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with every ``BATCHD_*`` variable replaced by those of ``env``
    (and ``env``'s other variables set), restored afterwards."""
    with _ENV_LOCK:
        saved = dict(os.environ)
        try:
            for key in [k for k in os.environ if k.startswith("BATCHD_")]:
                del os.environ[key]
            os.environ.update(env)
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)


class _Captured(logging.Handler):
    """The ``batchd`` loggers' records while the app runs, as a log file would have them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class InProcessBatchd:
    """One batchd app in this process, restartable on the same data dir."""

    def __init__(
        self,
        data_dir: Path,
        *,
        upstream: str | None = None,
        env: Mapping[str, str] | None = None,
        api_key: str = "test-key",
        config: Path | None = None,
        **flags: Any,
    ) -> None:
        self.data_dir = data_dir
        self.upstream = upstream
        self.env = {**FAST_ENV, **(env or {})}
        self.api_key = api_key
        self.config = config
        self.flags = flags
        self.log_path = f"(in-process app, data dir {data_dir})"
        self.settings: Settings | None = None
        self._http: TestClient | None = None
        self._stack: ExitStack | None = None
        self._log = _Captured()
        self._clients: list[openai.OpenAI] = []

    @property
    def root_url(self) -> str:
        return ROOT_URL

    @property
    def base_url(self) -> str:
        return ROOT_URL + "/v1"

    @property
    def running(self) -> bool:
        return self._stack is not None

    def start(self) -> InProcessBatchd:
        assert self._stack is None, "already started"
        with environment(self.env), ExitStack() as stack:
            self.settings = load_settings(
                self.config, data_dir=self.data_dir, upstream=self.upstream, **self.flags
            )
            stack.enter_context(self._logging(self.settings.log_level))
            # Unhandled errors surface in the test, not only as a 500 answer.
            http = TestClient(create_app(self.settings), base_url=ROOT_URL)
            stack.enter_context(http)  # runs the app's start-up: store, worker, webhooks
            stack.callback(gc.unfreeze)  # the app freezes what it finds alive at start-up
            self._http = http
            self._stack = stack.pop_all()
        return self

    @contextmanager
    def _logging(self, level: str) -> Iterator[None]:
        logger = logging.getLogger("batchd")
        before = logger.level
        logger.setLevel(level)
        logger.addHandler(self._log)
        try:
            yield
        finally:
            logger.removeHandler(self._log)
            logger.setLevel(before)

    def stop(self) -> None:
        """Shut the app down as uvicorn would (the lifespan's shutdown runs)."""
        self._clients.clear()
        stack, self._stack, self._http = self._stack, None, None
        if stack is not None:
            with environment(self.env):
                stack.close()

    def terminate(self) -> int:
        self.stop()
        return 0

    def restart(self, *, env: Mapping[str, str] | None = None) -> InProcessBatchd:
        self.stop()
        if env:
            self.env.update(env)
        return self.start()

    def logs(self) -> str:
        return "\n".join(self._log.lines)

    # ---------------------------------------------------------------- clients

    @property
    def transport(self) -> httpx2.Client:
        assert self._http is not None, "start() the app first"
        return self._http

    def make_client(self, api_key: str | None = None, **kwargs: Any) -> openai.OpenAI:
        c = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key if api_key is not None else self.api_key,
            max_retries=0,
            timeout=30,
            http_client=self.transport,
            **kwargs,
        )
        self._clients.append(c)
        return c

    @property
    def client(self) -> openai.OpenAI:
        if not self._clients:
            self.make_client()
        return self._clients[0]

    def http(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[int, httpx2.Headers, bytes]:
        """A raw request (``path`` from the root); ``auth=False``: no Authorization."""
        hdrs = {"Authorization": f"Bearer {self.api_key}"} if auth else {}
        hdrs.update(headers or {})
        resp = self.transport.request(method, path, content=body, headers=hdrs)
        return resp.status_code, resp.headers, resp.content



StartApi = Callable[..., InProcessBatchd]
"""The ``start_api`` fixture: ``start_api(upstream=url, env={...}, api_keys=[...])``."""
