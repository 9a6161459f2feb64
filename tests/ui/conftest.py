"""Headless Chromium for the dashboard tests: Debian's ``chromium`` driven by Playwright.

Never a downloaded browser: Playwright is pointed at the system binary
(``/usr/bin/chromium``, or ``BATCHD_TEST_CHROMIUM``). Without Playwright or that
binary the tests skip, saying which is missing (under ``BATCHD_TEST_REQUIRE=ui``,
as in CI, they fail).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import require

CHROMIUM = os.environ.get("BATCHD_TEST_CHROMIUM", "/usr/bin/chromium")
INSTALL = "apt-get install -y chromium && .venv/bin/pip install playwright"


# Module scope, not session: Playwright's sync API keeps an event loop running in
# this thread while it is open, and later tests call asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require.missing("ui", f"the playwright package is not installed ({INSTALL})")
    path = Path(CHROMIUM)
    if not path.is_file() and shutil.which(CHROMIUM) is None:
        require.missing("ui", f"no Chromium at {CHROMIUM} ({INSTALL}; or set BATCHD_TEST_CHROMIUM)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(path) if path.is_file() else shutil.which(CHROMIUM),
            headless=True,
            # Root in a container has no user namespaces for Chromium's sandbox.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield b
        finally:
            b.close()


# Every skip in this directory is about the browser: one that BATCHD_TEST_REQUIRE=ui
# (CI) turns into a failure, module-level importorskip calls included.
@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    report = yield
    require.fail_skip(report, "ui")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    require.fail_skip(report, "ui")
    return report


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(20_000)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield p
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
