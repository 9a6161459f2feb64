"""The in-process server used by `batchd demo` and `batchd run` without --base-url."""

from __future__ import annotations

import stat
from pathlib import Path

import openai
import pytest

from batchd.embedded import EmbeddedServer
from batchd.settings import Settings


def test_private_server_requires_its_own_key_which_survives_restarts(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", local_enabled=False)
    with EmbeddedServer(settings) as server:
        key = server.api_key
        assert key.startswith("sk-batchd-")
        ok = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        assert ok.batches.list().data == []
        wrong = openai.OpenAI(base_url=server.base_url, api_key="guess", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.batches.list()
    key_file = tmp_path / "data" / "embedded-api-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # Same data dir, same key: a resumed run finds its files and batches again.
    with EmbeddedServer(settings) as again:
        assert again.api_key == key


def test_non_private_server_keeps_the_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", local_enabled=False)
    with EmbeddedServer(settings, private=False) as server:
        anyone = openai.OpenAI(base_url=server.base_url, api_key="anything", max_retries=0)
        assert anyone.batches.list().data == []
    assert not (tmp_path / "data" / "embedded-api-key").exists()
