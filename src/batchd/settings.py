"""batchd's one settings object, for the server and the worker.

Built once at start-up (:func:`load_settings`) and passed down; nothing in the server
or the engine reads the environment anywhere else. Precedence, highest first:
command-line flags, ``BATCHD_*`` environment variables, the TOML file named by
``--config``, the defaults below.

Outside these settings, three things read the environment on purpose: the client
pipeline (``batchd run`` and its siblings) takes ``OPENAI_BASE_URL`` and
``OPENAI_API_KEY`` as the SDK does (:mod:`batchd.pipeline.commands`,
:func:`batchd.pipeline.runner.open_client`); the crash points a test arms with
``BATCHD_CRASH_AT`` (:mod:`batchd.pipeline.crashpoints`); and a backend's
``api_key_env`` names the variable holding its key (:class:`BackendConfig`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

MB = 1024 * 1024
AUTO_ENGINE_PROCESSES = 2
"""Engine children at most when ``engine_processes`` is 0 (auto): one per core."""


class BackendConfig(BaseModel):
    """One OpenAI-compatible model server and the models routed to it."""

    name: str = Field(description="A short name, used in logs and metrics.")
    base_url: str = Field(description="The server's base URL, ending in /v1.")
    api_key: str | None = Field(
        default=None, description="API key sent as a Bearer token (prefer api_key_env)."
    )
    api_key_env: str | None = Field(
        default=None, description="Name of an environment variable holding the API key."
    )
    models: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Model names or glob patterns (fnmatch) routed to this backend.",
    )
    concurrency: int = Field(
        default=1024,
        ge=1,
        description="Most requests in flight at once, across all workers: a ceiling; under "
        "it batchd finds the server's capacity itself.",
    )
    timeout: float = Field(default=600.0, gt=0, description="Seconds before one request times out.")
    background: bool = Field(
        default=False,
        description="Shared server: use only what online traffic leaves free (keep its queue "
        "empty, per-token latency within background_slowdown of batchd idle).",
    )
    background_slowdown: float = Field(
        default=1.5, ge=1.0, description="Background mode: most per-token slowdown allowed."
    )
    request_priority: int | None = Field(
        default=None,
        description="Sent as the body's `priority` with every request (vLLM "
        "--scheduling-policy priority: a higher value is served later); unset: not sent.",
    )
    metrics_url: str | None = Field(
        default=None,
        description="Where the server publishes Prometheus load gauges (vLLM, SGLang, "
        "llama.cpp, TGI); default: /metrics beside the base URL; 'off': timings only.",
    )

    def resolved_api_key(self) -> str | None:
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or self.api_key
        return self.api_key


class ModelPrice(BaseModel):
    """What one model's tokens cost, USD per million (the rate you pay for batch work)."""

    input: float = Field(ge=0, description="USD per million input tokens.")
    output: float = Field(ge=0, description="USD per million output tokens.")


class Settings(BaseSettings):
    """Every knob batchd has, each with a default."""

    model_config = SettingsConfigDict(env_prefix="BATCHD_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8000, description="Port the HTTP server binds.")
    data_dir: Path = Field(default=Path("./data"), description="Where files and the database live.")
    database_url: str | None = Field(
        default=None,
        description="Database URL (postgresql://... or sqlite:///...); default: SQLite at "
        "DATA_DIR/batchd.db. Plain postgresql:// uses asyncpg.",
    )
    storage: str | None = Field(
        default=None,
        description="Where file bytes live: s3://bucket/prefix (endpoint and credentials from "
        "the AWS_* settings) or file:///path; default: DATA_DIR.",
    )
    db_pool_size: int = Field(
        default=10, ge=1, description="PostgreSQL connections per process (and as many overflow)."
    )
    upstream: str | None = Field(
        default=None, description="One OpenAI-compatible base URL that serves every model."
    )
    upstream_api_key: str | None = Field(default=None, description="API key for --upstream.")
    upstream_concurrency: int = Field(
        default=1024,
        ge=1,
        description="Most requests in flight to --upstream at once (a ceiling; batchd finds "
        "the server's capacity under it).",
    )
    upstream_background: bool = Field(
        default=False,
        description="--upstream is shared with online traffic: use only what it leaves free.",
    )
    upstream_timeout: float = Field(
        default=600.0, gt=0, description="Per-request timeout, seconds."
    )
    backends: list[BackendConfig] = Field(
        default_factory=list, description="Model servers (TOML [[backends]] tables)."
    )
    local: dict[str, Any] = Field(
        default_factory=dict,
        description="Embedded local models (TOML [local] table); used when no backend matches.",
    )
    local_enabled: bool = Field(
        default=True, description="Answer models no backend serves with the embedded models."
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Accepted API keys (comma-separated in BATCHD_API_KEYS), beside those "
        "created with `batchd keys create`. With neither: an open server.",
    )
    key_refresh: float = Field(
        default=1.0,
        gt=0,
        le=5,
        description="Seconds between re-reads of the keys created "
        "with `batchd keys` (a new or revoked key takes effect everywhere within this).",
    )
    max_batch_file_bytes: int = Field(default=200 * MB, description="Largest batch input file.")
    max_file_bytes: int = Field(default=512 * MB, description="Largest file of any purpose.")
    max_tasks_per_batch: int = Field(default=50_000, description="Most request lines in one batch.")
    max_validation_errors: int = Field(
        default=100, description="Validation errors listed on a failed batch before summarising."
    )
    completion_windows: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["24h"],
        description="Accepted completion windows, e.g. 24h,1h,7d (OpenAI accepts only 24h).",
    )
    batch_file_ttl: int = Field(
        default=30 * 24 * 3600, description="Seconds until a batch input file expires."
    )
    upload_ttl: int = Field(
        default=3600,
        ge=1,
        description="Seconds an Upload (/v1/uploads) accepts parts before it "
        "expires (OpenAI: one hour); its parts are purged after that.",
    )
    max_upload_bytes: int = Field(
        default=8 * 1024 * MB, description="Largest file an Upload may announce (OpenAI: 8 GB)."
    )
    max_upload_part_bytes: int = Field(
        default=64 * MB, description="Largest part of an Upload (OpenAI: 64 MB)."
    )
    file_purge_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between purges of deleted or expired files, "
        "finished uploads' parts and expired idempotency keys.",
    )
    idempotency_ttl: int = Field(
        default=24 * 3600, ge=1, description="Seconds an Idempotency-Key is remembered."
    )
    max_enqueued_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Most input tokens one API key's unfinished batches "
        "(validating, in progress, finalizing) may hold; a batch beyond it fails validation "
        "with token_limit_exceeded. None: no limit.",
    )
    max_enqueued_requests: int | None = Field(
        default=None,
        ge=0,
        description="Most requests one API key's unfinished batches may "
        "hold (as max_enqueued_tokens). None: no limit.",
    )
    shard_size: int = Field(default=1000, ge=1, description="Request lines per unit of work.")
    lease_seconds: float = Field(default=30.0, gt=0, description="How long a work claim lasts.")
    max_attempts: int = Field(default=6, ge=1, description="Tries per request (first + retries).")
    retry_base: float = Field(default=0.5, gt=0, description="First retry delay, seconds.")
    retry_cap: float = Field(default=30.0, gt=0, description="Longest retry delay, seconds.")
    cancel_grace: float = Field(
        default=30.0, ge=0, description="Seconds in-flight requests may finish after a cancel."
    )
    poll_interval: float = Field(default=0.5, gt=0, description="Scheduler idle poll, seconds.")
    max_shards: int = Field(default=8, ge=1, description="Shards one worker runs at once.")
    adaptive_concurrency: bool = Field(
        default=True,
        description="Seek each backend's capacity (the knee where more in flight stops adding "
        "throughput) under its share of the configured ceiling; cut on 429. Off: always the "
        "full share.",
    )
    sqlite_synchronous: str = Field(
        default="NORMAL", description="SQLite synchronous mode: NORMAL (crash-safe) or FULL."
    )
    worker: bool = Field(default=True, description="Run batches in this process.")
    engine_process: bool = Field(
        default=True,
        description="With the worker on: run the engine (requests, results, output files) in a "
        "child process beside the API, so the two use two cores and the API stays responsive "
        "under load. Off: API and engine share one process and one event loop.",
    )
    engine_processes: int = Field(
        default=0,
        ge=0,
        description="With engine_process: how many engine children; 0 (default): one per "
        "core, at most 2. They share every backend's concurrency limit, split by the weights "
        "of the keys each has work for, and never hold more than it together (a part grows "
        "only into what the others do not hold); the first runs every batch, the others only "
        "batches sent over HTTP to a backend whose concurrency gives each child a request "
        "(never the embedded models, which one child loads). Measured against an upstream "
        "that answers at once (bench/bench_service.py, nginx, 2 cores): a 50,000-line batch "
        "ran 1.16x the bare loop's speed with two, 0.87x with one.",
    )

    @property
    def engine_children(self) -> int:
        """``engine_processes``, with 0 (auto) resolved: one per usable core, at most 2."""
        if self.engine_processes:
            return self.engine_processes
        affinity = getattr(os, "sched_getaffinity", None)
        cores = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
        return max(1, min(AUTO_ENGINE_PROCESSES, cores))

    engine_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="With engine_process: how much the engine child yields the CPU (Unix nice "
        "increment) when it competes with the API for a core; 0: not at all. 10 measured "
        "best for API latency under load (bench/bench_load.py) at no cost to batch speed.",
    )
    engine_restart_delay: float = Field(
        default=1.0,
        gt=0,
        description="Seconds before an engine child that died is started again (doubles on "
        "each quick death, up to 30).",
    )
    log_level: str = Field(default="INFO", description="Logging level.")
    log_format: str = Field(default="text", description="text or json.")
    metrics_enabled: bool = Field(
        default=True, description="Serve Prometheus metrics at /metrics (no API key: firewall it)."
    )
    ui_enabled: bool = Field(default=True, description="Serve the web dashboard at /ui.")
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="Per-model prices for the dashboard's cost column (model or glob pattern "
        '-> {input, output} USD per million tokens; JSON in BATCHD_PRICES, [prices."m"] in TOML).',
    )
    webhook_url: str | None = Field(
        default=None, description="URL that receives batch.completed/failed/expired/cancelled."
    )
    webhook_secret: str | None = Field(
        default=None, description="Standard Webhooks signing secret (whsec_<base64>)."
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, description="Tries per webhook event (first + retries)."
    )
    webhook_retry_base: float = Field(
        default=1.0, gt=0, description="First webhook retry delay, seconds (doubles each try)."
    )
    webhook_retry_cap: float = Field(
        default=300.0, gt=0, description="Longest webhook retry delay, seconds."
    )
    webhook_timeout: float = Field(
        default=10.0, gt=0, description="Seconds one webhook delivery may take."
    )

    @field_validator("api_keys", "completion_windows", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'batchd.db'}"

    def all_backends(self) -> list[BackendConfig]:
        """Configured backends, with ``--upstream`` (if given) routing every model."""
        backends = list(self.backends)
        if self.upstream:
            backends.append(
                BackendConfig(
                    name="upstream",
                    base_url=self.upstream,
                    api_key=self.upstream_api_key,
                    models=["*"],
                    concurrency=self.upstream_concurrency,
                    timeout=self.upstream_timeout,
                    background=self.upstream_background,
                )
            )
        return backends


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from flags (``overrides``; ``None`` values are ignored), env and TOML."""
    flags = {key: value for key, value in overrides.items() if value is not None}
    if config is None:
        return Settings(**flags)
    if not config.is_file():
        raise FileNotFoundError(f"config file not found: {config}")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=config)

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    return Settings.model_validate(_FromFile(**flags).model_dump())
