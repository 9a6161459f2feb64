"""Validating a batch input file, line by line, as OpenAI does.

:class:`FileValidator` is fed lines in order and remembers only what it must
(the ``custom_id`` set, the first model, a capped error list), so a 200 MB file
validates in bounded memory. The same rules serve the server's ``validating``
phase and the pipeline's pre-upload check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchd.jsonl import Line
from batchd.protocol import REQUIRED_BODY_FIELDS

MAX_CUSTOM_ID_CHARS = 512
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
INVALID_URL_MESSAGE = "The URL provided for this request does not match the batch endpoint."


@dataclass(frozen=True, slots=True)
class LineError:
    """One problem, reported as an entry of ``batch.errors.data``."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Task:
    """A valid request line."""

    custom_id: str
    model: str
    body: dict[str, Any]


@dataclass(slots=True)
class ValidationReport:
    total: int = 0
    """Request lines (blank lines excluded)."""
    model: str | None = None
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0
    """All errors found, including those beyond the listed cap."""
    input_tokens: int = 0
    """Prompt tokens of the valid lines, as ``count_tokens`` counts them (queue limits)."""

    @property
    def ok(self) -> bool:
        return self.error_count == 0


def parse_request_line(raw: bytes, *, line: int, endpoint: str) -> Task | LineError:
    """Check one non-blank line against the request-line schema."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return LineError(
            "invalid_json_line",
            f"Line {line} is not valid JSON ({_short(str(exc))}).",
            None,
            line,
        )
    if not isinstance(obj, dict):
        return LineError(
            "invalid_json_line",
            f"Line {line} must be a JSON object, got {type(obj).__name__}.",
            None,
            line,
        )

    custom_id = obj.get("custom_id")
    if custom_id is None:
        return _missing("custom_id", line)
    if not isinstance(custom_id, str):
        return _wrong_type("custom_id", "a string", custom_id, line)
    if not custom_id or len(custom_id) > MAX_CUSTOM_ID_CHARS:
        return LineError(
            "invalid_value",
            f"custom_id must be 1 to {MAX_CUSTOM_ID_CHARS} characters.",
            "custom_id",
            line,
        )

    method = obj.get("method")
    if method is None:
        return _missing("method", line)
    if not isinstance(method, str):
        return _wrong_type("method", "a string", method, line)
    if method.upper() != "POST":
        return LineError("invalid_value", f"method must be 'POST', got {method!r}.", "method", line)

    url = obj.get("url")
    if url is None:
        return _missing("url", line)
    if not isinstance(url, str):
        return _wrong_type("url", "a string", url, line)
    if url.rstrip("/") != endpoint:
        # A line names an endpoint path, never a host: anything else is refused here.
        return LineError("invalid_url", INVALID_URL_MESSAGE, "url", line)

    body = obj.get("body")
    if body is None:
        return _missing("body", line)
    if not isinstance(body, dict):
        return _wrong_type("body", "an object", body, line)
    if body.get("stream") is True:
        return LineError(
            "streaming_unsupported",
            "Streaming is not supported in batches: remove 'stream' or set it to false.",
            "body.stream",
            line,
        )
    model = body.get("model")
    if model is None:
        if endpoint != "/v1/moderations":
            return _missing("body.model", line)
        model = DEFAULT_MODERATION_MODEL
    if not isinstance(model, str) or not model:
        return _wrong_type("body.model", "a non-empty string", model, line)
    for names in REQUIRED_BODY_FIELDS.get(endpoint, ()):
        # Each entry is one required field, or alternatives of which one must be there.
        if all(body.get(name) is None for name in names):
            return _missing("body." + names[0], line)
    return Task(custom_id=custom_id, model=model, body=body)


class FileValidator:
    """Accumulates the verdict on a whole file, one line at a time."""

    def __init__(
        self,
        *,
        endpoint: str,
        max_tasks: int,
        max_errors: int = 100,
        model_served: Callable[[str], bool] | None = None,
        count_tokens: Callable[[str, dict[str, Any]], int] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._count_tokens = count_tokens
        """``(model, body) -> prompt tokens``; None: not counted."""
        self.max_tasks = max_tasks
        self.max_errors = max_errors
        self.report = ValidationReport()
        self._seen: set[str] = set()
        self._model_served = model_served
        """The server's routing table (None: any model, as in the pipeline's own check)."""
        self._model_verdicts: dict[str, bool] = {}

    def feed(self, line: Line) -> Task | None:
        """Check one line; returns the task when the line is a valid request."""
        if line.too_long:
            self._error(
                LineError(
                    "line_too_long",
                    f"Line {line.number} is longer than the largest accepted line.",
                    None,
                    line.number,
                )
            )
            self.report.total += 1
            return None
        if line.blank:
            return None
        self.report.total += 1
        if self.report.total > self.max_tasks:
            # Past the limit the batch fails anyway; stop collecting ids so memory stays flat.
            return None
        result = parse_request_line(line.data, line=line.number, endpoint=self.endpoint)
        if isinstance(result, LineError):
            self._error(result)
            return None
        if result.custom_id in self._seen:
            self._error(
                LineError(
                    "duplicate_custom_id",
                    f"The custom_id {_short(result.custom_id)!r} appears more than once; "
                    "each must be unique within the file.",
                    "custom_id",
                    line.number,
                )
            )
            return None
        self._seen.add(result.custom_id)
        if not self._served(result.model):
            self._error(
                LineError(
                    "model_not_found",
                    f"The provided model {_short(result.model)!r} is not supported by the "
                    "Batch API.",
                    "body.model",
                    line.number,
                )
            )
            return None
        if self.report.model is None:
            self.report.model = result.model
        elif result.model != self.report.model:
            self._error(
                LineError(
                    "model_mismatch",
                    f"Line {line.number} uses model {_short(result.model)!r}, but earlier lines "
                    f"use {self.report.model!r}; a batch uses one model.",
                    "body.model",
                    line.number,
                )
            )
            return None
        if self._count_tokens is not None:
            self.report.input_tokens += self._count_tokens(result.model, result.body)
        return result

    def _served(self, model: str) -> bool:
        if self._model_served is None:
            return True
        verdict = self._model_verdicts.get(model)
        if verdict is None:
            verdict = self._model_verdicts[model] = self._model_served(model)
        return verdict

    def finish(self) -> ValidationReport:
        """The final verdict, with file-level errors added."""
        report = self.report
        if report.total == 0:
            self._error(LineError("empty_file", "The input file has no request lines."))
        elif report.total > self.max_tasks:
            self._error(
                LineError(
                    "too_many_tasks",
                    f"The input file has {report.total} requests; a batch accepts at most "
                    f"{self.max_tasks}.",
                )
            )
        hidden = report.error_count - len(report.errors)
        if hidden > 0:
            report.errors.append(
                LineError(
                    "too_many_errors",
                    f"{hidden} more errors were found and are not listed.",
                )
            )
        return report

    def _error(self, error: LineError) -> None:
        self.report.error_count += 1
        # File-level errors (no line) are always listed; line errors up to the cap.
        if error.line is None or len(self.report.errors) < self.max_errors:
            self.report.errors.append(error)


def _missing(param: str, line: int) -> LineError:
    return LineError(
        "missing_required_parameter",
        f"Line {line} is missing the required parameter '{param}'.",
        param,
        line,
    )


def _wrong_type(param: str, expected: str, value: object, line: int) -> LineError:
    return LineError(
        "invalid_type",
        f"Line {line}: '{param}' must be {expected}, got {type(value).__name__}.",
        param,
        line,
    )


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
