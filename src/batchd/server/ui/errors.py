"""A batch's failures counted by error code, for the dashboard.

A line batchd wrote itself (``batch_cancelled``, ``model_not_available``, a
timeout, ...) carries ``error.code``; a line the model server rejected carries its
HTTP status instead and counts as ``http_<status>``. Validation errors on a failed
batch count by their code. A finished batch is read from its error file (once,
then cached: it never changes); a running one from the results stored so far.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from batchd.errors import NotFound
from batchd.jsonl import iter_lines
from batchd.store.records import BatchRecord

ResultSource = Callable[[str], AsyncIterator[tuple[int, bool, bytes]]]
"""``iter_results(batch_id)``: ``(line_no, ok, data)`` of the lines done so far."""
FileSource = Callable[[str, str], AsyncIterable[bytes]]
"""The bytes of a file, by tenant and id (:class:`NotFound` once deleted)."""

_CACHE_SIZE = 256
_MAX_LINE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ErrorSummary:
    by_code: dict[str, int]
    """Code -> lines (or validation errors), most frequent first."""
    source: str
    """``validation``, ``error_file``, ``results`` (running batch) or ``unavailable``
    (the error file was deleted)."""


def line_code(raw: bytes) -> str:
    """The error code one error-file line stands for."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "unreadable_line"
    if not isinstance(obj, dict):
        return "unreadable_line"
    error: Any = obj.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return str(error["code"])
    response: Any = obj.get("response")
    if isinstance(response, dict) and isinstance(response.get("status_code"), int):
        return f"http_{response['status_code']}"
    return "unknown"


class ErrorSummaries:
    def __init__(self, *, results: ResultSource, file_bytes: FileSource) -> None:
        self._results = results
        self._file_bytes = file_bytes
        self._done: OrderedDict[str, ErrorSummary] = OrderedDict()

    async def summarise(self, batch: BatchRecord) -> ErrorSummary:
        cached = self._done.get(batch.id)
        if cached is not None:
            return cached
        counts: Counter[str] = Counter()
        for e in batch.errors or []:
            counts[str(e.get("code") or "unknown")] += 1
        source = "validation"
        if batch.phase != "done":
            source = "results"
            async for _line_no, ok, data in self._results(batch.id):
                if not ok:
                    counts[line_code(data)] += 1
        elif batch.error_file_id:
            source = "error_file"
            try:
                lines = iter_lines(
                    self._file_bytes(batch.tenant, batch.error_file_id), max_line_bytes=_MAX_LINE
                )
                async for line in lines:
                    if not line.blank:
                        counts[line_code(line.data)] += 1
            except NotFound:
                return ErrorSummary(dict(counts.most_common()), "unavailable")
        summary = ErrorSummary(dict(counts.most_common()), source)
        if batch.phase == "done":
            self._done[batch.id] = summary
            while len(self._done) > _CACHE_SIZE:
                self._done.popitem(last=False)
        return summary
