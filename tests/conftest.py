"""Shared fixtures: a real upstream model server, batchd apps in this process (API
cases) and real batchd processes (crash, chaos, CLI and end-to-end cases)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import require
from harness import BatchdProcess, StartBatchd
from inproc import InProcessBatchd, StartApi
from upstream_server import Faults, UpstreamServer


def pytest_configure(config: pytest.Config) -> None:
    require.required()  # a misspelt BATCHD_TEST_REQUIRE stops the run at once


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    require.fail_skip(report, None)  # BATCHD_TEST_REQUIRE=all: no skips at all
    if report.failed:
        for proc in getattr(item, "batchd_procs", []):
            report.sections.append((f"batchd log {proc.log_path}", proc.logs()[-20000:]))
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    report = yield
    require.fail_skip(report, None)
    return report


def _shown_on_failure(request: pytest.FixtureRequest) -> list[Any]:
    """The servers whose logs the report shows when this test fails."""
    shown: list[Any] = request.node.__dict__.setdefault("batchd_procs", [])
    return shown


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
    shown = _shown_on_failure(request)

    def start(*, data_dir: Path | None = None, **kwargs: Any) -> BatchdProcess:
        if data_dir is None:
            data_dir = tmp_path_factory.mktemp("batchd") / "data"
        proc = BatchdProcess(data_dir, **kwargs)
        started.append(proc)
        shown.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def batchd(start_batchd: StartBatchd, upstream: UpstreamServer) -> BatchdProcess:
    """A batchd server process routing every model to the test upstream."""
    return start_batchd(upstream=upstream.base_url)


@pytest.fixture
def start_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartApi]:
    """Start batchd apps in this process (keyword arguments as for InProcessBatchd:
    ``upstream``, ``env``, ``config``, ``api_key``, and Settings fields as flags).
    Each is shut down after the test; a failed test's report shows their logs."""
    started: list[InProcessBatchd] = []
    shown = _shown_on_failure(request)

    def start(*, data_dir: Path | None = None, **kwargs: Any) -> InProcessBatchd:
        if data_dir is None:
            data_dir = tmp_path_factory.mktemp("batchd") / "data"
        app = InProcessBatchd(data_dir, **kwargs)
        started.append(app)
        shown.append(app)
        return app.start()

    yield start
    for app in started:
        app.stop()


@pytest.fixture
def api(start_api: StartApi, upstream: UpstreamServer) -> InProcessBatchd:
    """A batchd app in this process routing every model to the test upstream."""
    return start_api(upstream=upstream.base_url)
