"""Shared fixtures: a real upstream model server and real batchd processes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import BatchdProcess, StartBatchd
from upstream_server import Faults, UpstreamServer


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for proc in getattr(item, "batchd_procs", []):
            report.sections.append((f"batchd log {proc.log_path}", proc.logs()[-20000:]))
    return report


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[UpstreamServer]:
    server = UpstreamServer(Faults()).start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: UpstreamServer) -> UpstreamServer:
    """The session's upstream, with no faults and fresh counters."""
    upstream_server.reset(Faults())
    return upstream_server


@pytest.fixture
def start_batchd(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartBatchd]:
    """Start batchd servers: ``start_batchd(upstream=url, env={...}, args=[...])``.

    Every server is stopped after the test; when the test failed, their logs are
    shown in the report.
    """
    started: list[BatchdProcess] = []
    request.node.batchd_procs = started

    def start(*, data_dir: Path | None = None, **kwargs: Any) -> BatchdProcess:
        if data_dir is None:
            data_dir = tmp_path_factory.mktemp("batchd") / "data"
        proc = BatchdProcess(data_dir, **kwargs)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def batchd(start_batchd: StartBatchd, upstream: UpstreamServer) -> BatchdProcess:
    """A batchd server routing every model to the test upstream."""
    return start_batchd(upstream=upstream.base_url)
