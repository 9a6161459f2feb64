"""The option sets the pipeline commands share: what their values build."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
import typer

from batchd.pipeline.commands import estimate_command, run, validate
from batchd.pipeline.config import RunConfig
from batchd.pipeline.options import CONFIG_OPTIONS, SPEC_OPTIONS, request_spec, run_config


def test_run_takes_every_config_and_spec_option() -> None:
    params = set(inspect.signature(run).parameters)
    assert set(CONFIG_OPTIONS) <= params and set(SPEC_OPTIONS) <= params


@pytest.mark.parametrize("command", [estimate_command, validate])
def test_other_commands_take_only_known_options(command: Callable[..., None]) -> None:
    params = set(inspect.signature(command).parameters) - {"input", "file"}
    known = set(CONFIG_OPTIONS) | set(SPEC_OPTIONS) | {"temperature", "max_tokens", "param"}
    assert params <= known | {"json_schema"}


def test_run_config_keeps_defaults_for_unset_options() -> None:
    config = run_config(
        Path("in.csv"),
        {"max_bytes_per_batch": "1MiB", "retry_length": False, "poll_max": None, "quiet": True},
    )
    assert config == RunConfig(
        input=Path("in.csv"), max_bytes_per_batch=1 << 20, retry_length=False
    )
    assert run_config(Path("x"), {"max_bytes_per_batch": None}) == RunConfig(input=Path("x"))


def test_request_spec_from_options() -> None:
    spec = request_spec(
        {
            "model": "m",
            "endpoint": "/v1/responses",
            "template": "Q: {q}",
            "max_tokens": 7,
            "temperature": 0.5,
            "param": ["seed=3", "user=bob"],
            "dry_run": True,
        }
    )
    assert (spec.model, spec.endpoint, spec.template) == ("m", "/v1/responses", "Q: {q}")
    assert spec.params == {"temperature": 0.5, "max_output_tokens": 7, "seed": 3, "user": "bob"}
    assert request_spec({}).params == {}
    with pytest.raises(typer.BadParameter):
        request_spec({"param": ["no-equals"]})
