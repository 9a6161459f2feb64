"""Structured output: the ``response_format`` sent with each request, and the check
every answer must pass before it counts as a success.

A :class:`SchemaSpec` comes from a JSON Schema file (checked with ``jsonschema``)
or from a pydantic model (checked by the model itself, so the parsed value is what
the model's validators accept).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError

from batchd.pipeline.errors import InputError


@dataclass(frozen=True)
class SchemaSpec:
    """A named JSON schema, and optionally the pydantic model it came from."""

    name: str
    schema: dict[str, Any]
    model: type[BaseModel] | None = None

    def response_format(self) -> dict[str, Any]:
        """The body field OpenAI's structured outputs expect."""
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.schema, "strict": True},
        }

    def parse(self, text: str | None) -> tuple[Any, str | None]:
        """The parsed answer and ``None``, or ``None`` and why the answer is refused."""
        if text is None:
            return None, "invalid_structured_output: the answer has no text"
        if self.model is not None:
            try:
                return self.model.model_validate_json(text).model_dump(mode="json"), None
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "answer"
                return None, f"invalid_structured_output: {where}: {first['msg']}"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, f"invalid_structured_output: not JSON ({exc.msg})"
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(self.schema).iter_errors(value)
        )
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "answer"
            return None, f"invalid_structured_output: {where}: {error.message}"
        return value, None


def schema_from_file(path: Path, name: str | None = None) -> SchemaSpec:
    """A schema file: either the bare JSON Schema or ``{"name", "schema"}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the JSON schema {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: a JSON schema must be an object")
    if "schema" in data and isinstance(data["schema"], dict):
        name = name or str(data.get("name") or path.stem)
        data = data["schema"]
    try:
        jsonschema.Draft202012Validator.check_schema(data)
    except jsonschema.exceptions.SchemaError as exc:
        raise InputError(f"{path}: not a valid JSON schema: {exc.message}") from exc
    return SchemaSpec(name=_safe_name(name or path.stem), schema=data)


def schema_from_model(model: type[BaseModel], name: str | None = None) -> SchemaSpec:
    """A pydantic model as a strict JSON schema (no extra properties, all required)."""
    schema = model.model_json_schema()
    _make_strict(schema)
    return SchemaSpec(name=_safe_name(name or model.__name__), schema=schema, model=model)


def _make_strict(node: Any) -> None:
    # OpenAI's strict mode wants every object closed and every property required.
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
            node["required"] = list(node["properties"])
        for value in node.values():
            _make_strict(value)
    elif isinstance(node, list):
        for value in node:
            _make_strict(value)


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
    return cleaned[:64] or "answer"
