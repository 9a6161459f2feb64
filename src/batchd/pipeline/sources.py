"""Reading the input one row at a time: JSONL, CSV or Parquet, never all at once.

Rows are numbered from 1 in input order; that number names a row in messages
(``line`` is where it sits in a text file) and makes the default ``custom_id``.
A JSONL file whose first request-looking line has ``custom_id`` and ``body`` is a
*ready batch file*: its lines are sent as they are.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from batchd.jsonl import BOM
from batchd.pipeline.errors import InputError

Format = Literal["jsonl", "csv", "parquet"]

_SUFFIXES: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
PARQUET_BATCH_ROWS = 8192


@dataclass(frozen=True, slots=True)
class Row:
    """One input row."""

    index: int
    """1-based position among the rows (blank lines excluded)."""
    line: int
    """1-based line in a text file (the row index for Parquet)."""
    data: dict[str, Any]
    """Column name -> value."""
    raw: bytes | None = None
    """The line's bytes, for JSONL input."""


def detect_format(path: Path) -> Format:
    """The input's format, from its file name."""
    try:
        return _SUFFIXES[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(_SUFFIXES))
        raise InputError(f"{path}: unknown input format (known suffixes: {known})") from None


def iter_jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of every non-blank line, CRLF and BOM removed."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            data = raw.rstrip(b"\n").rstrip(b"\r")
            if number == 1 and data.startswith(BOM):
                data = data[len(BOM) :]
            if data.strip():
                yield number, data


def is_batch_file(path: Path) -> bool:
    """True when the file is JSONL whose first line is already a batch request line."""
    if detect_format(path) != "jsonl":
        return False
    for _number, data in iter_jsonl_lines(path):
        try:
            first = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        return isinstance(first, dict) and "custom_id" in first and "body" in first
    return False


def iter_rows(path: Path) -> Iterator[Row]:
    """Every row of the input, streamed."""
    readers = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}
    if not path.is_file():
        raise InputError(f"input not found: {path}")
    return readers[detect_format(path)](path)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    for index, (number, data) in enumerate(iter_jsonl_lines(path), start=1):
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON ({exc})") from exc
        if not isinstance(value, dict):
            raise InputError(f"{path}:{number}: a row must be a JSON object")
        yield Row(index, number, value, data)


def _csv_rows(path: Path) -> Iterator[Row]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        for index, record in enumerate(reader, start=1):
            # line_num is the record's last line (a quoted cell may span several)
            yield Row(index, reader.line_num, dict(record))


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for record in batch.to_pylist():
            index += 1
            yield Row(index, index, record)


def csv_columns(path: Path) -> list[str]:
    """The header of a CSV file."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh, delimiter=delimiter), [])
