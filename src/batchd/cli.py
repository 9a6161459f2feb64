"""The ``batchd`` command."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from batchd.settings import load_settings

app = typer.Typer(
    name="batchd",
    help="A self-hosted OpenAI-compatible Batch API, and a pipeline for bulk LLM work.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """batchd: run the server, or push prompts through a batch API."""


# Options shared by `serve` and `worker` (same database, storage and backends).
DataDirOpt = Annotated[
    Optional[Path], typer.Option("--data-dir", help="Where files and the database live.")  # noqa: UP045
]
UpstreamOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="OpenAI-compatible base URL (…/v1) that serves every model."),
]
UpstreamKeyOpt = Annotated[
    Optional[str], typer.Option("--upstream-api-key", help="API key for --upstream.")  # noqa: UP045
]
UpstreamConcurrencyOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(help="Most requests in flight to --upstream (across all workers)."),
]
UpstreamBackgroundOpt = Annotated[
    Optional[bool],  # noqa: UP045
    typer.Option(
        "--upstream-background",
        help="--upstream is shared with online traffic: use only what it leaves free.",
    ),
]
ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", help="TOML file: backends, routes, settings.")  # noqa: UP045
]
DatabaseOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="postgresql://… or sqlite:///… (default: SQLite in the data dir)."),
]
StorageOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="s3://bucket/prefix (AWS_* settings) or file:///path (default: data dir)."),
]
LogLevelOpt = Annotated[Optional[str], typer.Option(help="Logging level.")]  # noqa: UP045
LogFormatOpt = Annotated[Optional[str], typer.Option(help="text or json.")]  # noqa: UP045
WebhookOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="URL that receives batch.* events (secret: BATCHD_WEBHOOK_SECRET)."),
]


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to bind.")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="Port to bind.")] = None,  # noqa: UP045
    data_dir: DataDirOpt = None,
    upstream: UpstreamOpt = None,
    upstream_api_key: UpstreamKeyOpt = None,
    upstream_concurrency: UpstreamConcurrencyOpt = None,
    upstream_background: UpstreamBackgroundOpt = None,
    config: ConfigOpt = None,
    api_key: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--api-key", help="Accepted API key (repeatable). None: open server."),
    ] = None,
    database_url: DatabaseOpt = None,
    storage: StorageOpt = None,
    worker: Annotated[
        Optional[bool], typer.Option("--worker/--no-worker", help="Run batches in this process.")  # noqa: UP045
    ] = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
    webhook_url: WebhookOpt = None,
) -> None:
    """Run the OpenAI-compatible Files + Batches API server (with --no-worker: the API only)."""
    import uvicorn

    from batchd.server.app import create_app
    from batchd.server.logs import configure_logging

    settings = load_settings(
        config,
        host=host,
        port=port,
        data_dir=data_dir,
        upstream=upstream,
        upstream_api_key=upstream_api_key,
        upstream_concurrency=upstream_concurrency,
        upstream_background=upstream_background,
        api_keys=api_key or None,
        database_url=database_url,
        storage=storage,
        worker=worker,
        log_level=log_level,
        log_format=log_format,
        webhook_url=webhook_url,
    )
    configure_logging(settings.log_level, settings.log_format)
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal with the
    # handler that was installed before it; make that handler a clean exit (status 0).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=max(5, int(settings.cancel_grace)),
    )


@app.command("worker")
def worker_command(
    data_dir: DataDirOpt = None,
    upstream: UpstreamOpt = None,
    upstream_api_key: UpstreamKeyOpt = None,
    upstream_concurrency: UpstreamConcurrencyOpt = None,
    upstream_background: UpstreamBackgroundOpt = None,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    storage: StorageOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
    webhook_url: WebhookOpt = None,
) -> None:
    """Run batches without the HTTP API: claim work from the shared database and run it."""
    import asyncio

    from batchd.engine.standalone import run_worker
    from batchd.server.logs import configure_logging

    settings = load_settings(
        config,
        data_dir=data_dir,
        upstream=upstream,
        upstream_api_key=upstream_api_key,
        upstream_concurrency=upstream_concurrency,
        upstream_background=upstream_background,
        database_url=database_url,
        storage=storage,
        log_level=log_level,
        log_format=log_format,
        webhook_url=webhook_url,
    )
    configure_logging(settings.log_level, settings.log_format)
    # Batches this worker finishes announce themselves like those of `serve`.
    from batchd.engine.events import Observers
    from batchd.webhooks import build_dispatcher

    dispatcher = build_dispatcher(settings)
    asyncio.run(
        run_worker(
            settings,
            observers=Observers([dispatcher]) if dispatcher else None,
            companions=[dispatcher] if dispatcher else [],
        )
    )


@app.command()
def demo(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the demo server keeps its data.")
    ] = Path("./demo-data"),
    output: Annotated[Path, typer.Option("--output", help="Where the results are written.")] = Path(
        "./demo-output"
    ),
) -> None:
    """Run the shipped sample batches through the embedded models (no network, no key)."""
    from batchd.demo import run_demo
    from batchd.server.logs import configure_logging

    configure_logging("WARNING")
    settings = load_settings(None, data_dir=data_dir, upstream=None, poll_interval=0.2)
    raise typer.Exit(run_demo(settings, output))


def _register_pipeline_commands() -> None:
    """The pipeline's commands (run, status, results, ...) live with the pipeline."""
    try:
        from batchd.pipeline.commands import register
    except ImportError:
        return
    register(app)


def main() -> None:
    _register_pipeline_commands()
    app()
