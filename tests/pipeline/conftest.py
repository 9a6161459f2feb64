"""Real parts for pipeline tests: the test upstream, a batchd server, the CLI as a process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from batchd.embedded import EmbeddedServer
from batchd.settings import Settings
from upstream_server import Faults, UpstreamServer

FAST = ["--poll-interval", "0.05", "--poll-max", "0.3", "--quiet"]


@pytest.fixture(scope="session")
def pipeline_upstream() -> Iterator[UpstreamServer]:
    server = UpstreamServer(Faults()).start()
    yield server
    server.stop()


@pytest.fixture
def upstream(pipeline_upstream: UpstreamServer) -> UpstreamServer:
    pipeline_upstream.reset(Faults())
    return pipeline_upstream


@pytest.fixture
def server(upstream: UpstreamServer, tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A real batchd server in this process, routing every model to the test upstream."""
    settings = Settings(
        upstream=upstream.base_url,
        local_enabled=False,
        data_dir=tmp_path / "server",
        poll_interval=0.05,
        retry_base=0.02,
        retry_cap=0.1,
        max_attempts=2,
    )
    with EmbeddedServer(settings, private=False) as srv:
        yield srv


@pytest.fixture
def client(server: EmbeddedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=2)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def batchd_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``batchd <args>`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-c", "from batchd.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OPENAI_API_KEY": "", **(env or {})},
    )


def server_counts(client: openai.OpenAI) -> tuple[int, int]:
    """(batch input files, batches) on the server."""
    files = [f for f in client.files.list(purpose="batch") if f.filename.startswith("batchd-")]
    return len(files), len(list(client.batches.list()))
