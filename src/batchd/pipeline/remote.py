"""The batch API as the pipeline uses it, through the official ``openai`` SDK.

Every upload is named ``batchd-<run>-<chunk>.jsonl`` and every batch carries
``metadata`` ``{batchd_run, batchd_chunk, batchd_attempt}``, so a run that died
between a call and its record can find what it made by listing the server
(:meth:`Remote.find_upload`, :meth:`Remote.find_batch`) instead of making it again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, cast

import openai
from openai.types import Batch

from batchd.pipeline.errors import RemoteError
from batchd.states import TERMINAL_STATUSES, BatchStatus

TERMINAL: frozenset[BatchStatus] = TERMINAL_STATUSES
REFUSED: BatchStatus = BatchStatus.FAILED
"""What a chunk the server refused to take records as its batch status."""
# How far before an intent a listing keeps looking (server clocks drift).
CLOCK_SLACK = 600.0
DOWNLOAD_TRIES = 5
TRANSIENT = (
    openai.APIConnectionError,
    openai.APITimeoutError,
    openai.InternalServerError,
    openai.RateLimitError,
)


class Remote:
    """One run's view of a batch API."""

    def __init__(self, client: openai.OpenAI, run_id: str, *, retry_base: float = 0.5) -> None:
        self.client = client
        self.run_id = run_id
        self.retry_base = retry_base

    def filename(self, chunk_id: str) -> str:
        return f"batchd-{self.run_id}-{chunk_id}.jsonl"

    def metadata(self, chunk_id: str, attempt: int) -> dict[str, str]:
        return {
            "batchd_run": self.run_id,
            "batchd_chunk": chunk_id,
            "batchd_attempt": str(attempt),
        }

    # ------------------------------------------------------------ uploads

    def upload(self, path: Path, chunk_id: str) -> str:
        with path.open("rb") as fh:
            uploaded = self.client.files.create(file=(self.filename(chunk_id), fh), purpose="batch")
        return uploaded.id

    def find_upload(self, chunk_id: str, size: int, since: float) -> str | None:
        """The file an interrupted upload of this chunk left on the server, if any."""
        name = self.filename(chunk_id)
        for item in self.client.files.list(purpose="batch", order="desc", limit=100):
            if item.filename == name and item.bytes == size:
                return item.id
            if item.created_at < since - CLOCK_SLACK:
                break
        return None

    # ------------------------------------------------------------ batches

    def create(
        self, file_id: str, *, endpoint: str, chunk_id: str, attempt: int, window: str
    ) -> Batch:
        return self.client.batches.create(
            input_file_id=file_id,
            endpoint=cast(Any, endpoint),
            completion_window=cast(Any, window),
            metadata=self.metadata(chunk_id, attempt),
        )

    def find_batch(self, chunk_id: str, attempt: int, since: float) -> Batch | None:
        """The batch an interrupted create for this chunk and attempt made, if any."""
        wanted = self.metadata(chunk_id, attempt)
        for batch in self.client.batches.list(limit=100):
            meta = batch.metadata or {}
            if all(meta.get(k) == v for k, v in wanted.items()):
                return batch
            if batch.created_at < since - CLOCK_SLACK:
                break
        return None

    def retrieve(self, batch_id: str) -> Batch:
        return self.client.batches.retrieve(batch_id)

    def cancel(self, batch_id: str) -> Batch:
        return self.client.batches.cancel(batch_id)

    # ---------------------------------------------------------- downloads

    def download(self, file_id: str, dest: Path) -> None:
        """Stream a file to ``dest``, retrying transient failures.

        The file appears whole or not at all (written aside, then renamed).
        """
        part = dest.with_name(dest.name + ".part")
        for attempt in range(1, DOWNLOAD_TRIES + 1):
            try:
                with (
                    self.client.files.with_streaming_response.content(file_id) as response,
                    part.open("wb") as fh,
                ):
                    for block in response.iter_bytes(1 << 20):
                        fh.write(block)
                    fh.flush()
                    os.fsync(fh.fileno())
                part.replace(dest)
                return
            except TRANSIENT as exc:
                if attempt == DOWNLOAD_TRIES:
                    raise RemoteError(f"download of {file_id} failed: {exc}") from exc
                time.sleep(min(30.0, self.retry_base * 2 ** (attempt - 1)))
