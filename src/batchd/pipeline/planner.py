"""Validating the input and cutting it into chunk files, in one streaming pass.

Every request line is checked with the server's own rules
(:class:`batchd.validation.FileValidator`) across the whole input, so a
duplicate ``custom_id`` or a second model is caught with its line number before
anything is uploaded. Valid lines go straight into chunk files that close at the
request-count or byte limit; only the ``custom_id`` set lives in memory.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from batchd.jsonl import Line
from batchd.pipeline.config import DEFAULT_ENDPOINT, RequestSpec, RunConfig
from batchd.pipeline.errors import InputError
from batchd.pipeline.ledger import Ledger, RequestEntry
from batchd.pipeline.prompts import BuiltLine, RequestBuilder
from batchd.pipeline.sources import (
    csv_columns,
    detect_format,
    is_batch_file,
    iter_jsonl_lines,
    iter_rows,
)
from batchd.pipeline.tokens import TokenCounter
from batchd.validation import FileValidator, LineError, Task, ValidationReport

MAX_LISTED_ERRORS = 100
ENTRY_BATCH = 5000


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    id: str
    requests: int
    bytes: int


@dataclass
class Plan:
    """The outcome of the planning pass."""

    endpoint: str
    model: str | None
    batch_file: bool
    """The input was a ready batch JSONL (lines sent as they are)."""
    report: ValidationReport
    chunks: list[ChunkPlan] = field(default_factory=list)
    input_tokens: int = 0
    """Prompt tokens, counted only when a counter was given."""
    max_output_tokens: int | None = None
    """Sum of every line's token limit, when every line sets one."""
    token_method: str | None = None

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self.chunks)


def chunk_id(round_: int, seq: int) -> str:
    return f"r{round_}-c{seq:05d}"


class ChunkWriter:
    """Appends lines to ``r<round>-c<seq>.jsonl`` files, starting a new one at either limit.

    With ``directory=None`` nothing is written; sizes are still computed (``--dry-run``).
    """

    def __init__(
        self, directory: Path | None, round_: int, max_requests: int, max_bytes: int
    ) -> None:
        self.directory = directory
        self.round = round_
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.chunks: list[ChunkPlan] = []
        self._fh: IO[bytes] | None = None
        self._n = 0
        self._size = 0

    def path(self, cid: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{cid}.jsonl"

    def add(self, custom_id: str, data: bytes) -> RequestEntry:
        size = len(data) + 1
        if self._n and (self._n >= self.max_requests or self._size + size > self.max_bytes):
            self._close()
        if self._n == 0:
            cid = chunk_id(self.round, len(self.chunks))
            self.chunks.append(ChunkPlan(cid, 0, 0))
            if self.directory is not None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._fh = self.path(cid).open("wb")
        cid = self.chunks[-1].id
        entry = RequestEntry(custom_id, -1, cid, self._size, len(data))
        if self._fh is not None:
            self._fh.write(data + b"\n")
        self._n += 1
        self._size += size
        self.chunks[-1] = ChunkPlan(cid, self._n, self._size)
        return entry

    def close(self) -> list[ChunkPlan]:
        self._close()
        return self.chunks

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            self._fh.close()
            self._fh = None
        self._n = 0
        self._size = 0


class InputCheck:
    """The server's rules over the whole input, plus the pipeline's own row errors."""

    def __init__(self, endpoint: str) -> None:
        self.validator = FileValidator(
            endpoint=endpoint, max_tasks=sys.maxsize, max_errors=MAX_LISTED_ERRORS
        )
        self.extra: list[LineError] = []
        self.extra_count = 0

    def feed(self, number: int, item: BuiltLine | bytes | LineError) -> Task | None:
        if isinstance(item, LineError):
            self.add(item)
            return None
        data = item.data if isinstance(item, BuiltLine) else item
        return self.validator.feed(Line(number, 0, len(data), data))

    def add(self, error: LineError) -> None:
        self.extra_count += 1
        self.validator.report.total += 1
        if len(self.extra) < MAX_LISTED_ERRORS:
            self.extra.append(error)

    def finish(self) -> ValidationReport:
        report = self.validator.finish()
        if self.extra_count:
            merged = sorted(
                [*report.errors, *self.extra], key=lambda e: (e.line is None, e.line or 0)
            )
            report.errors = [e for e in merged if e.code != "empty_file" or report.total == 0]
            report.error_count += self.extra_count
        return report


def _ready_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    yield from iter_jsonl_lines(path)


def ready_endpoint(path: Path) -> str:
    """The url of a ready batch file's first line."""
    for _number, data in iter_jsonl_lines(path):
        try:
            url = orjson.loads(data).get("url")
        except (orjson.JSONDecodeError, AttributeError):
            break
        if isinstance(url, str):
            return url.rstrip("/")
        break
    return DEFAULT_ENDPOINT


def make_plan(
    config: RunConfig,
    spec: RequestSpec,
    *,
    chunk_dir: Path | None = None,
    ledger: Ledger | None = None,
    counter: TokenCounter | None = None,
) -> Plan:
    """Validate every line; write chunk files to ``chunk_dir`` and rows to ``ledger`` if given.

    The plan's ``report`` says whether the input is valid; callers must not use the
    chunks of an invalid plan.
    """
    path = config.input
    if not path.is_file():
        raise InputError(f"input not found: {path}")
    batch_file = is_batch_file(path)
    endpoint = (spec.endpoint or "").rstrip("/") or (
        ready_endpoint(path) if batch_file else DEFAULT_ENDPOINT
    )
    items: Iterator[tuple[int, BuiltLine | bytes | LineError]]
    if batch_file:
        items = _ready_lines(path)
    else:
        columns = csv_columns(path) if detect_format(path) == "csv" else None
        builder = RequestBuilder(spec, columns)
        items = ((row.line, builder.build(row)) for row in iter_rows(path))

    check = InputCheck(endpoint)
    writer = ChunkWriter(chunk_dir, 0, config.max_requests_per_batch, config.max_bytes_per_batch)
    pending: list[RequestEntry] = []
    input_tokens = 0
    max_out: int | None = 0
    seq = 0
    for number, item in items:
        task = check.feed(number, item)
        if task is None:
            continue
        data = item.data if isinstance(item, BuiltLine) else item
        assert isinstance(data, bytes)
        if len(data) + 1 > config.max_bytes_per_batch:
            check.add(
                LineError(
                    "line_too_large",
                    f"Line {number} is {len(data) + 1} bytes, more than --max-bytes-per-batch.",
                    None,
                    number,
                )
            )
            continue
        if check.validator.report.error_count or check.extra_count:
            continue  # invalid input: keep validating, stop writing
        entry = writer.add(task.custom_id, data)
        seq += 1
        pending.append(
            RequestEntry(entry.custom_id, seq, entry.src_chunk, entry.src_offset, entry.src_length)
        )
        if counter is not None:
            input_tokens += counter.count_body(task.body)
            limit = (
                task.body.get("max_tokens")
                or task.body.get("max_output_tokens")
                or task.body.get("max_completion_tokens")
            )
            max_out = max_out + int(limit) if (max_out is not None and limit) else None
        if ledger is not None and len(pending) >= ENTRY_BATCH:
            ledger.add_requests(pending)
            pending.clear()
    chunks = writer.close()
    report = check.finish()
    if ledger is not None and pending and report.ok:
        ledger.add_requests(pending)
    model = report.model or spec.model
    return Plan(
        endpoint=endpoint,
        model=model,
        batch_file=batch_file,
        report=report,
        chunks=chunks if report.ok else [],
        input_tokens=input_tokens,
        max_output_tokens=max_out if counter is not None else None,
        token_method=counter.method if counter is not None else None,
    )
