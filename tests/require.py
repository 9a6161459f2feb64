"""Skip, or fail, when a real part of the test setup is missing.

Locally a test whose PostgreSQL, Chromium or embedded models are missing skips and
says what to install. CI must never pass by skipping them: it sets
``BATCHD_TEST_REQUIRE`` (comma-separated parts: ``pg``, ``ui``, ``local``, or ``all``),
and a missing required part then fails the test (or the module, at collection) with
the same reason. A directory that belongs to one part (tests/local, tests/ui) hands
its skips to :func:`fail_skip` from its conftest, so any skip there, ``importorskip``
included, fails when that part is required; ``all`` does this for every skip of the
suite (tests/conftest.py), so a skip point added later cannot hide a missing part.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

ENV = "BATCHD_TEST_REQUIRE"
PARTS = ("pg", "ui", "local")


def required() -> frozenset[str]:
    raw = {part.strip() for part in os.environ.get(ENV, "").split(",") if part.strip()}
    unknown = raw - {*PARTS, "all"}
    if unknown:
        raise pytest.UsageError(f"{ENV}: unknown part(s) {sorted(unknown)}; use {PARTS} or all")
    return frozenset(PARTS) | {"all"} if "all" in raw else frozenset(raw)


def is_required(part: str) -> bool:
    assert part in PARTS, part
    return part in required()


def no_skips() -> bool:
    """``BATCHD_TEST_REQUIRE=all``: no test may skip, whatever its reason."""
    return "all" in required()


def fail_skip(report: pytest.TestReport | pytest.CollectReport, part: str | None) -> None:
    """Turn a skipped ``report`` into a failure when ``part`` is required (``None``: only
    under ``all``). xfails stay what they are."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    if not (no_skips() if part is None else is_required(part)):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    report.outcome = "failed"
    report.longrepr = f"skipped, but {ENV} requires '{part or 'all'}': {reason}"


def missing(part: str, reason: str) -> NoReturn:
    """Skip for ``reason``, or fail when ``part`` is required."""
    if is_required(part):
        pytest.fail(f"{reason} [{ENV} requires '{part}']", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def import_or_missing(part: str, module: str, reason: str = "") -> ModuleType:
    """``pytest.importorskip`` that fails when ``part`` is required."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing(part, f"{reason or module + ' is not installed'} ({exc})")


def embedded_models() -> None:
    """Skip (or fail, when ``local`` is required) unless the embedded models and their
    files are installed (scripts/bootstrap.sh). Once they are, anything that goes wrong
    with them is a test failure, never a skip."""
    try:
        from batchd.backends.local import LocalModelsConfig
        from batchd.backends.local.config import resolve_model_path

        for module in ("llama_cpp", "onnxruntime", "tokenizers", "profanity_check"):
            importlib.import_module(module)
    except ImportError as exc:
        missing("local", f"embedded models not installed (scripts/bootstrap.sh): {exc}")
    config = LocalModelsConfig()
    try:
        for chat in config.chat.values():
            resolve_model_path(chat.path)
        for emb in config.embeddings.values():
            resolve_model_path(emb.onnx_path)
            resolve_model_path(emb.tokenizer_path)
    except FileNotFoundError as exc:
        missing("local", f"model files missing: {exc}")
