"""The option sets the pipeline's commands share, and what each set builds.

Typer reads a command's options from its parameters, so every command still names
the options it takes, with the annotated types below (one declaration each: flag,
help, default). What the commands share is what the values become: the options
that shape each request line build a :class:`RequestSpec` (:func:`request_spec`),
those that steer the run a :class:`RunConfig` (:func:`run_config`). A command hands
its parameters over as they are (``locals()``); options it does not take are unset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import orjson
import typer

from batchd.pipeline.api import make_spec
from batchd.pipeline.config import (
    DEFAULT_MAX_REQUESTS,
    DEFAULT_RETRY_ROUNDS,
    RequestSpec,
    RunConfig,
    parse_size,
)
from batchd.pipeline.prompts import max_tokens_param

# Optional[...] rather than X | None: typer reads these annotations at run time.
Str = Optional[str]  # noqa: UP045
Int = Optional[int]  # noqa: UP045
Float = Optional[float]  # noqa: UP045
OptPath = Optional[Path]  # noqa: UP045

# ------------------------------------------------------------ the request spec

ModelOpt = Annotated[Str, typer.Option("--model", "-m", help="Model for every request.")]
TemplateOpt = Annotated[
    Str, typer.Option("--template", help="Prompt template over the columns ({column}), or a file.")
]
InputColumnOpt = Annotated[Str, typer.Option("--input-column", help="Column holding the prompt.")]
SystemOpt = Annotated[Str, typer.Option("--system", help="System message / instructions.")]
IdColumnOpt = Annotated[
    Str, typer.Option("--id-column", help="Column with each row's custom_id (default row-<n>).")
]
EndpointOpt = Annotated[
    Str, typer.Option("--endpoint", help="/v1/chat/completions (default), /v1/embeddings, ...")
]
TemperatureOpt = Annotated[Float, typer.Option("--temperature", help="Sampling temperature.")]
MaxTokensOpt = Annotated[Int, typer.Option("--max-tokens", help="Most output tokens per answer.")]
ParamOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option("--param", help="Extra body field KEY=VALUE (VALUE as JSON if it parses)."),
]
SchemaOpt = Annotated[
    OptPath, typer.Option("--json-schema", help="JSON Schema file: structured, validated answers.")
]

SPEC_OPTIONS = ("model", "endpoint", "template", "input_column", "system", "id_column")
"""Options passed to :func:`make_spec` as they are."""

# ------------------------------------------------------------ the run config

BaseUrlOpt = Annotated[
    Str,
    typer.Option(
        "--base-url",
        envvar="OPENAI_BASE_URL",
        help="OpenAI-compatible API (…/v1). Default: "
        "OpenAI with OPENAI_API_KEY, else an in-process batchd server.",
    ),
]
ApiKeyOpt = Annotated[Str, typer.Option("--api-key", envvar="OPENAI_API_KEY", help="API key.")]
MaxReqOpt = Annotated[
    Int, typer.Option("--max-requests-per-batch", help=f"Default {DEFAULT_MAX_REQUESTS}.")
]
MaxBytesOpt = Annotated[
    Str, typer.Option("--max-bytes-per-batch", help="Bytes (or 200MB, 1GiB). Default 200MB.")
]
PriceInOpt = Annotated[Float, typer.Option("--price-input", help="USD per 1M input tokens.")]
PriceOutOpt = Annotated[Float, typer.Option("--price-output", help="USD per 1M output tokens.")]
StateDirOpt = Annotated[
    OptPath, typer.Option("--state-dir", help="Ledger and chunk files (default OUTPUT.batchd).")
]
MaxRetryRoundsOpt = Annotated[
    Int, typer.Option("--max-retry-rounds", help=f"Default {DEFAULT_RETRY_ROUNDS}.")
]
RetryLengthOpt = Annotated[
    Optional[bool],  # noqa: UP045
    typer.Option("--retry-length/--no-retry-length", help="Resubmit finish_reason=length."),
]
OutputOpt = Annotated[OptPath, typer.Option("--output", "-o", help="Merged results file.")]
PollIntervalOpt = Annotated[Float, typer.Option("--poll-interval", help="First poll delay, s.")]
PollMaxOpt = Annotated[Float, typer.Option("--poll-max", help="Longest poll delay, s.")]
MaxInFlightOpt = Annotated[
    Int, typer.Option("--max-in-flight", help="Most batches running at once (default 4).")
]
TokenLimitWaitOpt = Annotated[
    Float,
    typer.Option("--token-limit-wait", help="Seconds before resubmitting on token_limit_exceeded."),
]
CompletionWindowOpt = Annotated[
    Str,
    typer.Option(
        "--completion-window",
        help="Batch completion window sent to the API (default 24h, the only one "
        "OpenAI accepts).",
    ),
]

CONFIG_OPTIONS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name != "input")
"""Options that set the :class:`RunConfig` field of the same name (when given)."""


def request_spec(options: Mapping[str, Any]) -> RequestSpec:
    """The request spec from a command's option values."""
    params = body_params(
        options.get("endpoint"),
        options.get("temperature"),
        options.get("max_tokens"),
        options.get("param"),
    )
    return make_spec(
        **{k: options[k] for k in SPEC_OPTIONS if k in options},
        params=params,
        json_schema=options.get("json_schema"),
    )


def run_config(input: Path, options: Mapping[str, Any]) -> RunConfig:
    """The run config from a command's option values; unset ones keep their defaults."""
    given = {k: options[k] for k in CONFIG_OPTIONS if options.get(k) is not None}
    size = given.pop("max_bytes_per_batch", None)
    if size:
        given["max_bytes_per_batch"] = parse_size(size)
    return RunConfig(input=input, **given)


def body_params(
    endpoint: str | None, temperature: float | None, max_tokens: int | None, param: list[str] | None
) -> dict[str, Any]:
    """The extra request body fields from ``--temperature``, ``--max-tokens`` and ``--param``."""
    params: dict[str, Any] = {}
    if temperature is not None:
        params["temperature"] = temperature
    if max_tokens is not None:
        params[max_tokens_param(endpoint)] = max_tokens
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--param wants KEY=VALUE, got {item!r}")
        try:
            params[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            params[key] = value
    return params
