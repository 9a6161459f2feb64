"""The ``batchd`` command."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from batchd.cli_keys import app as keys_app
from batchd.cli_options import with_options
from batchd.pipeline.commands import register as register_pipeline_commands
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


# Options shared by `serve` and `worker` (same database, storage, backends and events).
ENGINE_OPTIONS: dict[str, object] = {
    "data_dir": Annotated[
        Optional[Path], typer.Option("--data-dir", help="Where files and the database live.")  # noqa: UP045
    ],
    "upstream": Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="OpenAI-compatible base URL (…/v1) that serves every model."),
    ],
    "upstream_api_key": Annotated[
        Optional[str], typer.Option("--upstream-api-key", help="API key for --upstream.")  # noqa: UP045
    ],
    "upstream_concurrency": Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="Most requests in flight to --upstream (across all workers)."),
    ],
    "upstream_background": Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option(
            "--upstream-background",
            help="--upstream is shared with online traffic: use only what it leaves free.",
        ),
    ],
    "config": Annotated[
        Optional[Path], typer.Option("--config", help="TOML file: backends, routes, settings.")  # noqa: UP045
    ],
    "database_url": Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="postgresql://… or sqlite:///… (default: SQLite in the data dir)."),
    ],
    "storage": Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="s3://bucket/prefix (AWS_* settings) or file:///path (default: data dir)."
        ),
    ],
    "log_level": Annotated[Optional[str], typer.Option(help="Logging level.")],  # noqa: UP045
    "log_format": Annotated[Optional[str], typer.Option(help="text or json.")],  # noqa: UP045
    "webhook_url": Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="URL that receives batch.* events (secret: BATCHD_WEBHOOK_SECRET)."),
    ],
}


@app.command()
@with_options(ENGINE_OPTIONS)
def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to bind.")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="Port to bind.")] = None,  # noqa: UP045
    api_key: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--api-key", help="Accepted API key (repeatable). None: open server."),
    ] = None,
    worker: Annotated[
        Optional[bool], typer.Option("--worker/--no-worker", help="Run batches in this process.")  # noqa: UP045
    ] = None,
    engine_process: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option(
            "--engine-process/--no-engine-process",
            help="Run batches in a child process beside the API (default), or in the API's.",
        ),
    ] = None,
    engine_processes: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help="How many engine child processes (they share each backend's limit); "
            "0 (default): one per core, at most 2."
        ),
    ] = None,
    *,
    shared: dict[str, Any],
) -> None:
    """Run the OpenAI-compatible Files + Batches API server (with --no-worker: the API only)."""
    import uvicorn

    from batchd.server.app import create_app
    from batchd.server.logs import configure_logging

    settings = load_settings(
        shared.pop("config"),
        host=host,
        port=port,
        api_keys=api_key or None,
        worker=worker,
        engine_process=engine_process,
        engine_processes=engine_processes,
        **shared,
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
@with_options(ENGINE_OPTIONS)
def worker_command(*, shared: dict[str, Any]) -> None:
    """Run batches without the HTTP API: claim work from the shared database and run it."""
    import asyncio

    from batchd.engine.standalone import run_worker
    from batchd.server.logs import configure_logging

    settings = load_settings(shared.pop("config"), **shared)
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


def main() -> None:
    # The pipeline's commands (run, status, results, ...) live with the pipeline. An
    # import error there is a bug to see at once, not a reason to drop the commands.
    register_pipeline_commands(app)
    app.add_typer(keys_app, name="keys")
    app()
