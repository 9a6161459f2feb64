"""``batchd keys``: create, list and revoke the API keys kept in the database.

They work on the database ``batchd serve`` uses (same ``--data-dir``,
``--database-url``, ``--config`` and ``BATCHD_*`` variables); a running server and
its workers see each change within ``BATCHD_KEY_REFRESH`` seconds (1 by default).
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from sqlalchemy.exc import SQLAlchemyError

from batchd.apikeys.admin import KeyAdminError, KeyUsage, create_key, list_keys, revoke_key
from batchd.cli_options import with_options
from batchd.settings import Settings, load_settings
from batchd.store.base import Store
from batchd.store.open import open_store

app = typer.Typer(
    name="keys",
    help="API keys kept in the database: one tenant per key, with limits and a weight.",
    no_args_is_help=True,
)

T = TypeVar("T")

STORE_OPTIONS: dict[str, object] = {
    "data_dir": Annotated[
        Optional[Path], typer.Option("--data-dir", help="Where files and the database live.")  # noqa: UP045
    ],
    "database_url": Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="postgresql://… or sqlite:///… (default: SQLite in the data dir)."),
    ],
    "config": Annotated[
        Optional[Path], typer.Option("--config", help="TOML file: backends, routes, settings.")  # noqa: UP045
    ],
}


def _with_store(shared: dict[str, Any], work: Callable[[Store, Settings], Awaitable[T]]) -> T:
    settings = load_settings(shared.pop("config"), **shared)

    async def run() -> T:
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            store = open_store(settings)  # ValueError: a URL it cannot use
        except (OSError, ValueError) as exc:
            raise _NoDatabase(exc) from exc
        try:
            await store.open()
            return await work(store, settings)
        except (OSError, SQLAlchemyError) as exc:
            raise _NoDatabase(exc) from exc
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except KeyAdminError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except _NoDatabase as exc:
        # The database cannot be reached or opened: say which one and why, no traceback.
        where = settings.database_url or settings.resolved_database_url()
        cause = exc.__cause__
        reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0]
        typer.echo(f"error: cannot use the database {_redacted(where)}: {reason}", err=True)
        raise typer.Exit(1) from None


class _NoDatabase(Exception):
    """The database could not be opened or used (its cause says why)."""


def _redacted(url: str) -> str:
    """The URL without its password (it may be in a DSN given on the command line)."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


@app.command("create")
@with_options(STORE_OPTIONS)
def create(
    name: Annotated[str, typer.Argument(help="A name for the key (its team, its use).")],
    max_enqueued_tokens: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=0, help="Most input tokens its unfinished batches may hold."),
    ] = None,
    max_enqueued_requests: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=0, help="Most requests its unfinished batches may hold."),
    ] = None,
    weight: Annotated[
        float, typer.Option(help="Its share of each backend, relative to other keys.")
    ] = 1.0,
    *,
    shared: dict[str, Any],
) -> None:
    """Create a key. Its secret is printed once, alone on the last line of stdout."""

    async def work(store: Store, _settings: Settings) -> str:
        rec, secret = await create_key(
            store, name, max_enqueued_tokens=max_enqueued_tokens,
            max_enqueued_requests=max_enqueued_requests, weight=weight,
        )  # fmt: skip
        limits = [
            f"{label} {value:,}"
            for label, value in (
                ("max enqueued tokens", rec.max_enqueued_tokens),
                ("max enqueued requests", rec.max_enqueued_requests),
            )
            if value is not None
        ]
        typer.echo(
            f"Created key {rec.name!r} (weight {rec.weight:g}"
            + (", " + ", ".join(limits) if limits else ", server-wide queue limits")
            + "). Its secret is shown only now; keep it somewhere safe:",
            err=True,
        )
        return secret

    typer.echo(_with_store(shared, work))


@app.command("list")
@with_options(STORE_OPTIONS)
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per key.")] = False,
    *,
    shared: dict[str, Any],
) -> None:
    """Every key with its usage: batches, requests, input and output tokens, last use."""

    async def work(store: Store, settings: Settings) -> list[KeyUsage]:
        return await list_keys(store, static_keys=settings.api_keys)

    rows = _with_store(shared, work)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.as_json()))
        return
    typer.echo(_table(rows))


@app.command("revoke")
@with_options(STORE_OPTIONS)
def revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    *,
    shared: dict[str, Any],
) -> None:
    """Revoke a key: every server and worker refuses it within seconds. Its batches keep
    running; its name and usage stay listed."""

    async def work(store: Store, _settings: Settings) -> bool:
        _rec, was_active = await revoke_key(store, name)
        return was_active

    was_active = _with_store(shared, work)
    typer.echo(f"Revoked key {name!r}." if was_active else f"Key {name!r} was already revoked.")


def _when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(rows: list[KeyUsage]) -> str:
    head = (
        "NAME", "STATUS", "WEIGHT", "MAX TOKENS", "MAX REQUESTS", "BATCHES", "REQUESTS",
        "INPUT TOKENS", "OUTPUT TOKENS", "CREATED", "LAST USED",
    )  # fmt: skip
    body = []
    for row in rows:
        j = row.as_json()
        body.append(
            (
                row.name, j["status"], f"{j['weight']:g}",
                "-" if j["max_enqueued_tokens"] is None else f"{j['max_enqueued_tokens']:,}",
                "-" if j["max_enqueued_requests"] is None else f"{j['max_enqueued_requests']:,}",
                f"{j['batches']:,}", f"{j['requests']:,}", f"{j['input_tokens']:,}",
                f"{j['output_tokens']:,}", _when(j["created_at"]), _when(j["last_used_at"]),
            )
        )  # fmt: skip
    if not body:
        return "No keys yet: batchd keys create NAME makes one."
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in (head, *body))  # fmt: skip
