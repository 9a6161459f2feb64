"""Constrained output: ``response_format`` and forced tool calls as GBNF grammars.

llama.cpp samples under a grammar, so an answer asked for as JSON (or as a call to a
given function) always parses and matches its schema, whatever the model's size.
The JSON-schema-to-GBNF conversion is llama-cpp-python's own (the port of
llama.cpp's ``json_schema_to_grammar``).

Tools: a model this small has no tool-calling training, so it cannot honestly decide
*whether* to call a tool (``tool_choice: "auto"``, OpenAI's default): that is refused.
When the caller decides (``"required"`` or a named function) the reply is generated
under a grammar built from the functions' parameter schemas and returned as
``tool_calls``. ``"none"`` generates plain text, as OpenAI does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llama_cpp import llama_grammar

from batchd.backends.local.errors import RequestError, invalid, unsupported

JSON = dict[str, Any]

JSON_OBJECT_GRAMMAR: str = llama_grammar.JSON_GBNF
"""Any JSON object (``response_format: {"type": "json_object"}``)."""


def schema_grammar(schema: Any, param: str) -> str:
    """GBNF for a JSON schema, or a 400 naming ``param`` if it cannot be converted."""
    if not isinstance(schema, dict):
        raise invalid(param, f"'{param}' must be a JSON schema object.")
    try:
        grammar: str = llama_grammar.json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare Exceptions and KeyErrors
        raise invalid(param, f"'{param}' cannot be enforced by the local models: {exc}") from None
    return grammar


def grammar_for_response_format(response_format: Any) -> str | None:
    """The grammar a ``response_format`` asks for (None for plain text)."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise invalid("response_format", "'response_format' must be an object.")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT_GRAMMAR
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise invalid(
                "response_format.json_schema",
                "'response_format.json_schema' must be an object with a 'schema'.",
            )
        return schema_grammar(spec["schema"], "response_format.json_schema.schema")
    raise invalid("response_format.type", f"Unsupported response_format type {kind!r}.")


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One function of ``tools``."""

    name: str
    description: str
    parameters: JSON


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """How to produce a forced tool call: the grammar, a prompt, and how to read it back."""

    functions: tuple[FunctionSpec, ...]
    named: str | None
    """The function ``tool_choice`` names; None for ``"required"`` (model picks one)."""
    grammar: str

    @property
    def finish_reason(self) -> str:
        # OpenAI answers a named tool_choice with finish_reason "stop" and a
        # "required" one with "tool_calls"; batchd mirrors that.
        return "stop" if self.named is not None else "tool_calls"

    def instructions(self) -> str:
        """A system-prompt paragraph telling the model what it is about to write."""
        listing = "\n".join(
            json.dumps(
                {"name": f.name, "description": f.description, "parameters": f.parameters},
                ensure_ascii=False,
            )
            for f in self.functions
            if self.named is None or f.name == self.named
        )
        if self.named is not None:
            return (
                f"You call the function `{self.named}`:\n{listing}\n"
                "Reply with its arguments as a JSON object, nothing else."
            )
        return (
            f"You call exactly one of these functions:\n{listing}\n"
            'Reply with JSON only: {"name": <function name>, "arguments": {...}}.'
        )

    def read_call(self, text: str) -> tuple[str, str] | None:
        """``(name, arguments JSON)`` from a generated reply; None if it is incomplete."""
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if self.named is not None:
            return self.named, json.dumps(value, ensure_ascii=False)
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return None
        return value["name"], json.dumps(value.get("arguments", {}), ensure_ascii=False)


def _functions(tools: Any) -> tuple[FunctionSpec, ...]:
    if not isinstance(tools, list) or not tools:
        raise invalid("tools", "'tools' must be a non-empty array.")
    out: list[FunctionSpec] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise unsupported(where, f"{where}: only tools of type 'function' are supported.")
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise invalid(f"{where}.function", f"{where}.function must have a 'name'.")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise invalid(f"{where}.function.parameters", "'parameters' must be a JSON schema.")
        out.append(FunctionSpec(fn["name"], str(fn.get("description") or ""), params))
    return tuple(out)


def plan_tools(tools: Any, tool_choice: Any) -> ToolPlan | None:
    """What ``tools``/``tool_choice`` ask for; None when the answer is plain text."""
    if tools is None:
        if tool_choice not in (None, "none"):
            raise invalid("tool_choice", "'tool_choice' is only allowed when 'tools' are given.")
        return None
    functions = _functions(tools)
    if tool_choice == "none":
        return None
    if tool_choice is None or tool_choice == "auto":
        raise unsupported(
            "tool_choice",
            "The local models cannot decide by themselves whether to call a tool "
            "(tool_choice 'auto', the default when tools are given). Pass tool_choice "
            "'required' or {'type': 'function', 'function': {'name': ...}} to force a call, "
            "or 'none'.",
        )
    if tool_choice == "required":
        variants = [
            {
                "type": "object",
                "properties": {"name": {"const": f.name}, "arguments": f.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for f in functions
        ]
        schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
        return ToolPlan(functions, None, schema_grammar(schema, "tools"))
    if (
        isinstance(tool_choice, dict)
        and tool_choice.get("type") == "function"
        and isinstance(tool_choice.get("function"), dict)
    ):
        name = tool_choice["function"].get("name")
        chosen = next((f for f in functions if f.name == name), None)
        if chosen is None:
            raise invalid("tool_choice", f"tool_choice names {name!r}, which is not in 'tools'.")
        return ToolPlan(functions, chosen.name, schema_grammar(chosen.parameters, "tools"))
    raise RequestError("Unsupported 'tool_choice' value.", param="tool_choice")
