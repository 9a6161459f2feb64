"""Turning rows into request lines: the prompt text, then a body per endpoint.

The body shape depends on the endpoint alone, so it is a table from endpoint to
body factory; the row decides only the text and the ``custom_id``.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from batchd.pipeline.config import DEFAULT_ENDPOINT, RequestSpec
from batchd.pipeline.errors import InputError
from batchd.pipeline.sources import Row
from batchd.validation import LineError

DEFAULT_INPUT_COLUMNS = ("prompt", "text", "input")

BodyFactory = Callable[[RequestSpec, str], dict[str, Any]]


def _chat(spec: RequestSpec, text: str) -> dict[str, Any]:
    messages = [{"role": "system", "content": spec.system}] if spec.system else []
    messages.append({"role": "user", "content": text})
    return {"messages": messages}


def _completions(spec: RequestSpec, text: str) -> dict[str, Any]:
    prompt = f"{spec.system}\n\n{text}" if spec.system else text
    return {"prompt": prompt}


def _responses(spec: RequestSpec, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {"input": text}
    if spec.system:
        body["instructions"] = spec.system
    return body


def _input_only(spec: RequestSpec, text: str) -> dict[str, Any]:
    return {"input": text}


BODIES: dict[str, BodyFactory] = {
    "/v1/chat/completions": _chat,
    "/v1/completions": _completions,
    "/v1/responses": _responses,
    "/v1/embeddings": _input_only,
    "/v1/moderations": _input_only,
}

# Generation limits are named differently per endpoint; --max-tokens means "the limit".
MAX_TOKENS_FIELD = {"/v1/responses": "max_output_tokens"}


def max_tokens_param(endpoint: str | None) -> str:
    return MAX_TOKENS_FIELD.get(endpoint or DEFAULT_ENDPOINT, "max_tokens")


@dataclass(frozen=True, slots=True)
class BuiltLine:
    custom_id: str
    data: bytes
    """The serialized request line, without newline."""


class RequestBuilder:
    """Builds the request line of each row under one :class:`RequestSpec`."""

    def __init__(self, spec: RequestSpec, columns: list[str] | None = None) -> None:
        self.spec = spec
        self.endpoint = spec.endpoint or DEFAULT_ENDPOINT
        if spec.model is None:
            raise InputError("--model is required unless the input is a ready batch JSONL")
        if self.endpoint not in BODIES:
            known = ", ".join(BODIES)
            raise InputError(f"endpoint {self.endpoint!r} is not supported (known: {known})")
        if spec.template is not None and spec.input_column is not None:
            raise InputError("give --template or --input-column, not both")
        self._fields = _template_fields(spec.template) if spec.template else []
        self._column = spec.input_column
        if spec.template is None and self._column is None and columns is not None:
            self._column = next((c for c in DEFAULT_INPUT_COLUMNS if c in columns), None)
        self._body = BODIES[self.endpoint]

    def custom_id(self, row: Row) -> str | LineError:
        """The row's ``custom_id``: its id column, or ``row-<n>`` (stable across runs)."""
        if self.spec.id_column is None:
            return f"row-{row.index}"
        value = row.data.get(self.spec.id_column)
        if value is None or value == "":
            return LineError(
                "missing_id",
                f"Line {row.line}: the id column {self.spec.id_column!r} is empty or missing.",
                self.spec.id_column,
                row.line,
            )
        return str(value)

    def text(self, row: Row) -> str | LineError:
        if self.spec.template is not None:
            missing = [name for name in self._fields if name not in row.data]
            if missing:
                return LineError(
                    "missing_column",
                    f"Line {row.line}: the template needs column(s) {', '.join(missing)}.",
                    missing[0],
                    row.line,
                )
            values = {k: "" if v is None else v for k, v in row.data.items()}
            try:
                return self.spec.template.format_map(values)
            except (ValueError, IndexError, AttributeError, KeyError) as exc:
                return LineError(
                    "template_error",
                    f"Line {row.line}: the template cannot be filled ({exc}).",
                    None,
                    row.line,
                )
        column = self._column or next((c for c in DEFAULT_INPUT_COLUMNS if c in row.data), None)
        if column is None or row.data.get(column) in (None, ""):
            wanted = column or " or ".join(DEFAULT_INPUT_COLUMNS)
            return LineError(
                "missing_column",
                f"Line {row.line}: no prompt text (column {wanted}); use --template or "
                "--input-column.",
                column,
                row.line,
            )
        return str(row.data[column])

    def build(self, row: Row) -> BuiltLine | LineError:
        """The row's request line, or why it cannot have one."""
        custom_id = self.custom_id(row)
        if isinstance(custom_id, LineError):
            return custom_id
        text = self.text(row)
        if isinstance(text, LineError):
            return text
        body: dict[str, Any] = {"model": self.spec.model, **self._body(self.spec, text)}
        body.update(self.spec.params)
        if self.spec.schema is not None:
            body["response_format"] = self.spec.schema.response_format()
        line = {"custom_id": custom_id, "method": "POST", "url": self.endpoint, "body": body}
        return BuiltLine(custom_id, orjson.dumps(line))


def _template_fields(template: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InputError(f"the template is not a valid format string: {exc}") from exc
    names: list[str] = []
    for _literal, name, _spec, _conv in parsed:
        if name is None:
            continue
        root = name.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise InputError("template placeholders must name columns, e.g. {text}")
        if root not in names:
            names.append(root)
    return names
