"""Fixtures for the embedded-model tests: one LocalBackend shared by the session.

The backend's worker threads are not tied to an event loop (results go back to
whichever loop submitted the request), so each test drives it with its own
``asyncio.run`` and the models load only once. Without the models the tests skip
(under ``BATCHD_TEST_REQUIRE=local``, as in CI, they fail).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import require


# Every skip in this directory is about the embedded models: one that BATCHD_TEST_REQUIRE=local
# (CI) turns into a failure, module-level importorskip calls included.
@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    report = yield
    require.fail_skip(report, "local")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    require.fail_skip(report, "local")
    return report


@pytest.fixture(scope="session")
def backend() -> Iterator[Any]:
    require.embedded_models()
    from batchd.backends.local import LocalBackend, LocalModelsConfig

    config = LocalModelsConfig()
    b = LocalBackend(config)
    yield b
    asyncio.run(b.aclose())
