"""Configuration: the CLI's flags, a TOML file with [[backends]], routing and /v1/models.

The console script, its flags and ``--config`` are checked through real ``batchd
serve`` processes; routing and precedence run against the app in this process
(tests/inproc.py), with settings loaded by the same ``load_settings``.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from harness import StartBatchd, by_custom_id, chat_line, results, run_batch
from inproc import StartApi
from upstream_server import Faults, UpstreamServer


@pytest.fixture(scope="module")
def second_upstream() -> Iterator[UpstreamServer]:
    server = UpstreamServer(Faults()).start()
    yield server
    server.stop()


@pytest.fixture
def upstream_b(second_upstream: UpstreamServer) -> UpstreamServer:
    second_upstream.reset(Faults())
    return second_upstream


def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_cli_entry_point_and_flags(
    start_batchd: StartBatchd, upstream: UpstreamServer, tmp_path: Path
) -> None:
    exe = shutil.which("batchd", path=str(Path(sys.executable).parent))
    assert exe, "the batchd console script is installed"
    server = start_batchd(
        upstream=upstream.base_url, command=[exe], args=["--upstream-api-key", "sk-flag"]
    )
    b = run_batch(server.client, [chat_line(1)])
    assert b.status == "completed"
    assert upstream.stats.auth == {"Bearer sk-flag": 1}


def test_toml_backends_route_models(
    start_api: StartApi,
    upstream: UpstreamServer,
    upstream_b: UpstreamServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(
        tmp_path / "batchd.toml",
        f"""
max_attempts = 2

[[backends]]
name = "alpha"
base_url = "{upstream.base_url}"
api_key_env = "ALPHA_KEY"
models = ["model-a"]
concurrency = 4
timeout = 30

[[backends]]
name = "beta"
base_url = "{upstream_b.base_url}"
models = ["fam-*", "model-b"]
concurrency = 2
""",
    )
    server = start_api(config=config, env={"ALPHA_KEY": "sk-alpha"})
    c = server.client
    models = {m.id: m.owned_by for m in c.models.list().data}
    assert models == {"model-a": "alpha", "model-b": "beta"}
    assert c.models.retrieve("fam-x").owned_by == "beta"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("unrouted")

    a = run_batch(c, [chat_line(i, model="model-a") for i in range(5)])
    b = run_batch(c, [chat_line(i, model="fam-7", text=f"b {i}") for i in range(6)])
    assert a.request_counts.completed == 5 and b.request_counts.completed == 6
    assert upstream.stats.total == 5 and upstream_b.stats.total == 6
    assert upstream.stats.auth == {"Bearer sk-alpha": 5}
    assert upstream_b.stats.auth == {"": 6}
    out = by_custom_id(results(c, b)[0])
    assert out["r0"]["response"]["body"]["model"] == "fam-7"

    # A model no backend serves: the batch fails validation, nothing is sent.
    none = run_batch(c, [chat_line(i, model="model-z") for i in range(3)])
    assert none.status == "failed"
    assert none.output_file_id is None and none.error_file_id is None
    assert [(e.code, e.param, e.line) for e in none.errors.data] == [
        ("model_not_found", "body.model", n) for n in (1, 2, 3)
    ]
    assert upstream.stats.total == 5 and upstream_b.stats.total == 6


def test_wildcard_route_lists_upstream_models(
    start_api: StartApi,
    upstream: UpstreamServer,
    upstream_b: UpstreamServer,
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path / "batchd.toml",
        f"""
[[backends]]
name = "exact"
base_url = "{upstream_b.base_url}"
models = ["special"]

[[backends]]
name = "anything"
base_url = "{upstream.base_url}"
models = ["*"]
""",
    )
    server = start_api(config=config)
    c = server.client
    models = {m.id: m.owned_by for m in c.models.list().data}
    # "test-model" is what the wildcard backend's own /v1/models reports.
    assert models == {"special": "exact", "test-model": "anything"}
    run_batch(c, [chat_line(1, model="special")])
    run_batch(c, [chat_line(2, model="whatever-else")])
    assert upstream_b.stats.total == 1 and upstream.stats.total == 1


def test_flags_and_env_override_the_file(
    start_api: StartApi, upstream: UpstreamServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "batchd.toml", "max_tasks_per_batch = 1\n")
    server = start_api(
        upstream=upstream.base_url, config=config, env={"BATCHD_MAX_TASKS_PER_BATCH": "3"}
    )
    b = run_batch(server.client, [chat_line(i) for i in range(3)])
    assert b.status == "completed"
    b = run_batch(server.client, [chat_line(i) for i in range(4)])
    assert b.status == "failed"
    assert b.errors is not None and b.errors.data[0].code == "too_many_tasks"


def test_config_file_settings_apply(
    start_batchd: StartBatchd, upstream: UpstreamServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "batchd.toml", "max_tasks_per_batch = 2\n")
    server = start_batchd(upstream=upstream.base_url, args=["--config", str(config)])
    b = run_batch(server.client, [chat_line(i) for i in range(3)])
    assert b.status == "failed"
    assert b.errors is not None and b.errors.data[0].code == "too_many_tasks"


def test_no_backend_at_all(start_api: StartApi) -> None:
    server = start_api()
    c = server.client
    assert c.models.list().data == []
    b = run_batch(c, [chat_line(1)])
    assert b.status == "failed" and b.output_file_id is None
    assert [e.code for e in b.errors.data] == ["model_not_found"]
