"""Fixtures for the embedded-model tests: one LocalBackend shared by the session.

The backend's worker threads are not tied to an event loop (results go back to
whichever loop submitted the request), so each test drives it with its own
``asyncio.run`` and the models load only once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def backend() -> Iterator[Any]:
    try:
        from batchd.backends.local import LocalBackend, LocalModelsConfig
        from batchd.backends.local.config import resolve_model_path
    except ImportError as exc:
        pytest.skip(f"embedded models not installed (scripts/bootstrap.sh): {exc}")
    config = LocalModelsConfig()
    try:
        for chat in config.chat.values():
            resolve_model_path(chat.path)
        for emb in config.embeddings.values():
            resolve_model_path(emb.onnx_path)
            resolve_model_path(emb.tokenizer_path)
    except FileNotFoundError as exc:
        pytest.skip(f"model files missing: {exc}")
    b = LocalBackend(config)
    yield b
    asyncio.run(b.aclose())
