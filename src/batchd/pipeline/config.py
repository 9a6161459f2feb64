"""What a run is asked to do: :class:`RequestSpec` (how rows become requests) and
:class:`RunConfig` (where they go and how they are chunked, polled and retried).

Both are plain frozen dataclasses built by the CLI or by callers of the Python API.
The parts that decide *which requests exist* feed the run's fingerprint, so a
resumed run with different options is refused instead of silently mixed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchd.pipeline.errors import InputError
from batchd.pipeline.structured import SchemaSpec

MB = 1_000_000
DEFAULT_MAX_REQUESTS = 50_000
DEFAULT_MAX_BYTES = 200 * MB
DEFAULT_RETRY_ROUNDS = 2
DEFAULT_ENDPOINT = "/v1/chat/completions"


@dataclass(frozen=True)
class RequestSpec:
    """How each input row becomes one request line."""

    model: str | None = None
    """Model for every request (required unless the input is a ready batch JSONL)."""
    endpoint: str | None = None
    """Target endpoint; default ``/v1/chat/completions`` (or the url of a ready batch file)."""
    template: str | None = None
    """``str.format`` template over the row's columns, e.g. ``"Classify: {text}"``."""
    input_column: str | None = None
    """Column holding the prompt as is (default: ``prompt``, ``text`` or ``input``)."""
    system: str | None = None
    """System message (chat) or instructions (responses)."""
    id_column: str | None = None
    """Column holding each row's ``custom_id``; default a stable ``row-<n>``."""
    params: dict[str, Any] = field(default_factory=dict)
    """Extra body fields: temperature, max_tokens, ..."""
    schema: SchemaSpec | None = None
    """Structured output: sent as ``response_format`` and checked on every answer."""

    def fingerprint_data(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "endpoint": self.endpoint,
            "template": self.template,
            "input_column": self.input_column,
            "system": self.system,
            "id_column": self.id_column,
            "params": self.params,
            "schema": None if self.schema is None else self.schema.response_format(),
        }


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``batchd run`` needs besides the request spec."""

    input: Path
    """Rows (JSONL, CSV, Parquet) or a ready batch JSONL."""
    output: Path | None = None
    """Merged results; default ``<input stem>.results.<ext>`` next to the input."""
    state_dir: Path | None = None
    """Ledger and chunk files; default ``<output>.batchd``."""
    base_url: str | None = None
    """OpenAI-compatible base URL; none (and no key): an in-process batchd server."""
    api_key: str | None = None
    """API key; default ``OPENAI_API_KEY``."""
    max_requests_per_batch: int = DEFAULT_MAX_REQUESTS
    max_bytes_per_batch: int = DEFAULT_MAX_BYTES
    max_retry_rounds: int = DEFAULT_RETRY_ROUNDS
    """Rounds of resubmitting failed lines after the first pass."""
    retry_length: bool = False
    """Also resubmit answers cut off by ``finish_reason: length``."""
    max_in_flight: int = 4
    """Most batches submitted and not yet finished at once."""
    poll_interval: float = 5.0
    """First delay between two polls of one batch, seconds."""
    poll_max: float = 60.0
    """Longest delay between two polls, seconds."""
    token_limit_wait: float = 60.0
    """Seconds to wait before resubmitting a batch refused with token_limit_exceeded."""
    completion_window: str = "24h"
    """Sent with every batch (``--completion-window``); OpenAI accepts only ``24h``, a
    batchd server those in its ``completion_windows`` setting. Lines a batch did not
    reach before it expired are resubmitted in the next retry round."""
    price_input: float | None = None
    """USD per million input tokens (overrides genai-prices)."""
    price_output: float | None = None
    """USD per million output tokens (overrides genai-prices)."""

    def resolved_output(self) -> Path:
        if self.output is not None:
            return self.output
        suffix = self.input.suffix or ".jsonl"
        return self.input.with_name(f"{self.input.stem}.results{suffix}")

    def resolved_state_dir(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir
        out = self.resolved_output()
        return out.with_name(out.name + ".batchd")

    def fingerprint(self, spec: RequestSpec) -> str:
        """What must match for a ledger to be resumed by this run."""
        data = {
            "input": str(self.input.resolve()),
            "spec": spec.fingerprint_data(),
            "max_requests_per_batch": self.max_requests_per_batch,
            "max_bytes_per_batch": self.max_bytes_per_batch,
        }
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def parse_size(text: str) -> int:
    """``"200MB"`` -> 200000000; plain numbers are bytes; ``MiB`` units are binary."""
    match = _SIZE.match(text)
    if match is None:
        raise InputError(f"not a size: {text!r} (try 200MB or 1048576)")
    unit = (match.group(2) or "").lower().rstrip("b")
    return int(float(match.group(1)) * _UNITS[unit])
