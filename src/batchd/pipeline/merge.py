"""Writing the merged results in input order and in the input's format.

The input is read again, row by row, and each row's outcome is looked up in the
ledger by ``custom_id``: memory stays flat however large the run. Rows gain
``custom_id``, ``response`` (the answer) and ``error``; CSV cells hold JSON for
non-text answers. A ready batch file yields OpenAI-shaped output lines instead.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from batchd.pipeline.config import RequestSpec
from batchd.pipeline.ledger import Ledger, StoredOutcome
from batchd.pipeline.prompts import RequestBuilder
from batchd.pipeline.sources import csv_columns, detect_format, iter_jsonl_lines, iter_rows
from batchd.pipeline.states import LineStatus

ADDED = ("custom_id", "response", "error")
PARQUET_BATCH = 4096


def _error(
    outcome: StoredOutcome | None, *, length_is_error: bool = True, cancelled: bool = False
) -> str | None:
    if outcome is None:
        return "not_submitted: the row was not part of the run"
    if outcome.status is LineStatus.OK or (
        outcome.status is LineStatus.LENGTH and not length_is_error
    ):
        return None
    if outcome.status is LineStatus.PENDING:
        if cancelled:
            return "run_cancelled: the run was cancelled before this line had a result"
        return "pending: no result yet"
    return outcome.reason or outcome.status


def _rows(ledger: Ledger, input_path: Path, spec: RequestSpec) -> Iterator[dict[str, Any]]:
    columns = csv_columns(input_path) if detect_format(input_path) == "csv" else None
    builder = RequestBuilder(spec, columns)
    # Without --retry-length a cut-off answer is kept as the answer, not an error.
    length_is_error = ledger.flag("retry_length")
    cancelled = ledger.flag("cancelled")
    for row in iter_rows(input_path):
        custom_id = builder.custom_id(row)
        cid = custom_id if isinstance(custom_id, str) else None
        outcome = ledger.outcome(cid) if cid is not None else None
        answered = outcome is not None and outcome.status is not LineStatus.FAILED
        answer = outcome.answer if outcome is not None and answered else None
        error = _error(outcome, length_is_error=length_is_error, cancelled=cancelled)
        yield {**row.data, "custom_id": cid, "response": answer, "error": error}


def write_results(
    ledger: Ledger, input_path: Path, spec: RequestSpec, output: Path, *, batch_file: bool
) -> int:
    """Write the merged output (atomically, via a temporary file); returns rows written."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    if batch_file:
        count = _write_batch_output(ledger, input_path, tmp)
    else:
        fmt = detect_format(output)
        rows = _rows(ledger, input_path, spec)
        writers = {"jsonl": _write_jsonl, "csv": _write_csv, "parquet": _write_parquet}
        count = writers[fmt](rows, tmp, input_path)
    tmp.replace(output)
    return count


def _write_batch_output(ledger: Ledger, input_path: Path, tmp: Path) -> int:
    length_is_error = ledger.flag("retry_length")
    count = 0
    with tmp.open("wb") as out:
        for _number, data in iter_jsonl_lines(input_path):
            try:
                custom_id = orjson.loads(data).get("custom_id")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            outcome = ledger.outcome(str(custom_id))
            line: dict[str, Any]
            if outcome is not None and outcome.result is not None:
                line = dict(outcome.result)
                if _error(outcome, length_is_error=length_is_error) and not line.get("error"):
                    line["error"] = {"code": outcome.status, "message": outcome.reason}
            else:
                line = {
                    "custom_id": custom_id,
                    "response": None,
                    "error": {"code": "not_completed", "message": _error(outcome)},
                }
            out.write(orjson.dumps(line) + b"\n")
            count += 1
    return count


def _write_jsonl(rows: Iterator[dict[str, Any]], tmp: Path, _input: Path) -> int:
    count = 0
    with tmp.open("wb") as out:
        for row in rows:
            out.write(orjson.dumps(row, default=str) + b"\n")
            count += 1
    return count


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


def _write_csv(rows: Iterator[dict[str, Any]], tmp: Path, input_path: Path) -> int:
    columns = csv_columns(input_path) if detect_format(input_path) == "csv" else []
    fieldnames = [c for c in columns if c not in ADDED]
    count = 0
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer: csv.DictWriter[str] | None = None
        for row in rows:
            if writer is None:
                extra = [k for k in row if k not in fieldnames and k not in ADDED]
                writer = csv.DictWriter(
                    fh, fieldnames=[*fieldnames, *extra, *ADDED], extrasaction="ignore"
                )
                writer.writeheader()
            writer.writerow({k: _cell(v) for k, v in row.items()})
            count += 1
        if writer is None:
            csv.writer(fh).writerow([*fieldnames, *ADDED])
    return count


def _write_parquet(rows: Iterator[dict[str, Any]], tmp: Path, _input: Path) -> int:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    count = 0
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal writer, schema
        if not batch:
            return
        # Answers vary in shape (text, objects, vectors): store them as JSON text.
        for row in batch:
            row["response"] = None if row["response"] is None else _cell(row["response"])
        table = pa.Table.from_pylist(batch, schema=schema)
        if writer is None:
            # The added columns are text even when the first rows are all empty.
            schema = table.schema
            for name in ADDED:
                schema = schema.set(schema.get_field_index(name), pa.field(name, pa.string()))
            table = table.cast(schema)
            writer = pq.ParquetWriter(tmp, schema)
        writer.write_table(table)
        batch.clear()

    for row in rows:
        batch.append(row)
        count += 1
        if len(batch) >= PARQUET_BATCH:
            flush()
    flush()
    if writer is not None:
        writer.close()
    else:
        pq.write_table(pa.table({k: pa.array([], pa.string()) for k in ADDED}), tmp)
    return count
