"""Fixtures for scale-out tests: a fresh PostgreSQL database, a local S3 server
(moto's ThreadedMotoServer), and batchd API and worker processes sharing them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import BatchdProcess
from store.pg import fresh_database
from store.s3 import env_for, moto_s3, new_bucket


class WorkerProcess(BatchdProcess):
    """``batchd worker``: no HTTP API; ready when it says so in its log."""

    def argv(self) -> list[str]:
        argv = [*self.command, "worker", "--data-dir", str(self.data_dir)]
        if self.upstream:
            argv += ["--upstream", self.upstream]
        return argv + self.args

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        import os
        import subprocess

        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
        env.update(self.env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {' '.join(self.argv())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.data_dir.parent
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.logs()}")
            if "batchd worker ready" in self.logs():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"worker not ready in {timeout}s:\n{self.logs()}")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture
def shared_env(s3_endpoint: str) -> Iterator[dict[str, str]]:
    """What every process of one cluster shares: a new database and a new bucket."""
    with fresh_database() as url:
        yield {
            "BATCHD_DATABASE_URL": url,
            "BATCHD_STORAGE": f"s3://{new_bucket(s3_endpoint)}/batchd",
            **env_for(s3_endpoint),
        }


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """``cluster(kind, upstream=..., env=...)`` starts an ``api`` (serve --no-worker),
    ``serve`` (API and worker) or ``worker`` process; all are stopped after the test."""
    started: list[BatchdProcess] = []
    request.node.batchd_procs = started

    def start(kind: str, **kwargs: Any) -> BatchdProcess:
        data_dir: Path = tmp_path_factory.mktemp(kind) / "data"
        if kind == "worker":
            proc: BatchdProcess = WorkerProcess(data_dir, **kwargs)
        else:
            args = ["--no-worker"] if kind == "api" else []
            proc = BatchdProcess(data_dir, args=[*args, *kwargs.pop("args", [])], **kwargs)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
