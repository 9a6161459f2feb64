"""``batchd demo``: the shipped sample batches through the embedded models.

Starts batchd in this process with no upstream (so every request is answered by
the embedded CPU models), submits the samples with the official ``openai`` SDK
exactly as a user would, waits with a progress display, downloads the results
and prints a short summary.
"""

from __future__ import annotations

import json
import math
import time
from importlib import resources
from pathlib import Path
from typing import Any

import openai
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from batchd.embedded import EmbeddedServer
from batchd.settings import Settings

SAMPLES = (
    ("reviews.jsonl", "/v1/chat/completions", "classify 100 product reviews"),
    ("embed.jsonl", "/v1/embeddings", "embed 100 texts"),
)
TERMINAL = {"completed", "failed", "cancelled", "expired"}


def sample_path(name: str) -> Path:
    return Path(str(resources.files("batchd.samples").joinpath(name)))


def run_demo(settings: Settings, output_dir: Path, console: Console | None = None) -> int:
    console = console or Console()
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary = Table(title="batchd demo: embedded models, no network")
    for col in ("batch", "status", "ok", "failed", "tokens", "seconds", "results"):
        summary.add_column(col)
    failures = 0
    with EmbeddedServer(settings) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=2)
        console.print(f"[dim]batchd running in-process at {server.base_url}[/dim]")
        for name, endpoint, what in SAMPLES:
            t0 = time.monotonic()
            with sample_path(name).open("rb") as fh:
                upload = client.files.create(file=(name, fh), purpose="batch")
            batch = client.batches.create(
                input_file_id=upload.id,
                endpoint=endpoint,  # type: ignore[arg-type]
                completion_window="24h",
                metadata={"demo": name},
            )
            with Progress(
                TextColumn(f"[bold]{what}[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as progress:
                task = progress.add_task(what, total=None)
                while batch.status not in TERMINAL:
                    time.sleep(0.5)
                    batch = client.batches.retrieve(batch.id)
                    counts = batch.request_counts
                    if counts and counts.total:
                        progress.update(
                            task, total=counts.total, completed=counts.completed + counts.failed
                        )
            results = output_dir / name.replace(".jsonl", ".results.jsonl")
            lines: list[dict[str, Any]] = []
            if batch.output_file_id:
                client.files.content(batch.output_file_id).write_to_file(results)
                lines = [json.loads(x) for x in results.read_text().splitlines()]
            if batch.error_file_id:
                client.files.content(batch.error_file_id).write_to_file(
                    output_dir / name.replace(".jsonl", ".errors.jsonl")
                )
            counts = batch.request_counts
            ok = counts.completed if counts else 0
            bad = counts.failed if counts else 0
            failures += bad + (batch.status != "completed")
            summary.add_row(
                name,
                batch.status,
                str(ok),
                str(bad),
                str(batch.usage.total_tokens if batch.usage else 0),
                f"{time.monotonic() - t0:.1f}",
                str(results),
            )
            _show_examples(console, endpoint, lines)
    console.print(summary)
    console.print(f"Done in {time.monotonic() - started:.1f} s. Results are in {output_dir}/.")
    return 0 if failures == 0 else 1


def _show_examples(console: Console, endpoint: str, lines: list[dict[str, Any]]) -> None:
    if not lines:
        return
    if endpoint == "/v1/chat/completions":
        for line in lines[:3]:
            answer = line["response"]["body"]["choices"][0]["message"]["content"]
            console.print(f"  {line['custom_id']}: {answer.strip()[:80]!r}")
    elif endpoint == "/v1/embeddings" and len(lines) >= 2:
        a = lines[0]["response"]["body"]["data"][0]["embedding"]
        b = lines[1]["response"]["body"]["data"][0]["embedding"]
        cos = sum(x * y for x, y in zip(a, b, strict=True)) / (
            math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        )
        console.print(
            f"  {len(lines)} embeddings of {len(a)} dimensions; "
            f"cosine({lines[0]['custom_id']}, {lines[1]['custom_id']}) = {cos:.3f}"
        )
