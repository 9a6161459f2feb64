"""Driving a real batchd server process from tests.

:class:`BatchdProcess` runs ``python -m batchd serve`` as a subprocess on a free
port with its own data dir, waits for ``/health`` and hands out an official
``openai.OpenAI`` client. Its stderr goes to a file that the fixture prints when
a test fails. The helpers below upload lines, wait for a batch to finish and read
its output and error files back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import openai

TERMINAL = ("completed", "failed", "expired", "cancelled")

FAST_ENV: dict[str, str] = {
    "BATCHD_RETRY_BASE": "0.02",
    "BATCHD_RETRY_CAP": "0.5",
    "BATCHD_POLL_INTERVAL": "0.1",
    "BATCHD_LOCAL_ENABLED": "false",
    "BATCHD_CANCEL_GRACE": "2",
    "BATCHD_LOG_LEVEL": "INFO",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BatchdProcess:
    """One batchd server, restartable on the same data dir."""

    def __init__(
        self,
        data_dir: Path,
        *,
        upstream: str | None = None,
        env: Mapping[str, str] | None = None,
        args: Iterable[str] = (),
        api_key: str = "test-key",
        command: list[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.upstream = upstream
        self.env = {**FAST_ENV, **(env or {})}
        self.args = list(args)
        self.api_key = api_key
        self.command = command or [sys.executable, "-m", "batchd"]
        self.port = free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}-stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._clients: list[openai.OpenAI] = []

    # ------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        argv = [*self.command, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--data-dir", str(self.data_dir)]
        if self.upstream:
            argv += ["--upstream", self.upstream]
        return argv + self.args

    def start(self, timeout: float = 30.0) -> BatchdProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
        env.update(self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it from here
        log.write(f"\n===== start {' '.join(self.argv())}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.data_dir.parent
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"batchd exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.root_url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        raise RuntimeError(f"batchd did not become healthy in {timeout}s:\n{self.logs()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def restart(self, *, env: Mapping[str, str] | None = None) -> BatchdProcess:
        """Start again on the same data dir and port (after kill() or terminate())."""
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
        if env:
            self.env.update(env)
        return self.start()

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ---------------------------------------------------------------- clients

    def make_client(self, api_key: str | None = None, **kwargs: Any) -> openai.OpenAI:
        c = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key if api_key is not None else self.api_key,
            max_retries=0,
            timeout=30,
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
    ) -> tuple[int, dict[str, str], bytes]:
        """A raw HTTP request (``path`` from the root, e.g. ``/v1/files``); ``auth=False``
        sends no Authorization header at all."""
        hdrs = {"Authorization": f"Bearer {self.api_key}"} if auth else {}
        hdrs.update(headers or {})
        req = urllib.request.Request(self.root_url + path, data=body, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()


StartBatchd = Callable[..., BatchdProcess]
"""The ``start_batchd`` fixture: ``start_batchd(upstream=url, env={...}, args=[...])``."""


# -------------------------------------------------------------------- lines


def chat_line(
    i: int | str, *, model: str = "test-model", text: str | None = None
) -> dict[str, Any]:
    return {
        "custom_id": f"r{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": text if text is not None else f"hello {i}"}],
        },
    }


def to_jsonl(lines: Iterable[dict[str, Any] | str | bytes]) -> bytes:
    out = []
    for line in lines:
        if isinstance(line, dict):
            out.append(json.dumps(line).encode())
        elif isinstance(line, str):
            out.append(line.encode())
        else:
            out.append(line)
    return b"\n".join(out) + b"\n"


def upload(
    client: openai.OpenAI,
    lines: Iterable[dict[str, Any] | str | bytes] | bytes,
    *,
    filename: str = "input.jsonl",
) -> Any:
    data = lines if isinstance(lines, bytes) else to_jsonl(lines)
    return client.files.create(file=(filename, data, "application/jsonl"), purpose="batch")


def create_batch(
    client: openai.OpenAI,
    lines: Iterable[dict[str, Any] | str | bytes] | bytes,
    *,
    endpoint: str = "/v1/chat/completions",
    window: str = "24h",
    metadata: dict[str, str] | None = None,
) -> Any:
    f = upload(client, lines)
    kwargs: dict[str, Any] = {}
    if metadata is not None:
        kwargs["metadata"] = metadata
    return client.batches.create(
        input_file_id=f.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window=window,  # type: ignore[arg-type]
        **kwargs,
    )


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def wait_batch(
    client: openai.OpenAI,
    batch_id: str,
    *,
    timeout: float = 60.0,
    statuses: Iterable[str] = TERMINAL,
) -> Any:
    wanted = set(statuses)
    last: list[Any] = []

    def done() -> Any:
        b = client.batches.retrieve(batch_id)
        last[:] = [b]
        return b if b.status in wanted else None

    try:
        return wait_for(done, timeout=timeout, interval=0.1, what=f"batch {batch_id} in {wanted}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last seen: {last[0] if last else None}") from None


def run_batch(client: openai.OpenAI, lines: Any, *, timeout: float = 60.0, **kwargs: Any) -> Any:
    b = create_batch(client, lines, **kwargs)
    return wait_batch(client, b.id, timeout=timeout)


def read_jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def results(client: openai.OpenAI, batch: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(output lines, error lines)`` of a finished batch."""
    return read_jsonl(client, batch.output_file_id), read_jsonl(client, batch.error_file_id)


def by_custom_id(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for line in lines:
        assert line["custom_id"] not in out, f"custom_id {line['custom_id']} delivered twice"
        out[line["custom_id"]] = line
    return out
