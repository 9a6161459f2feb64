"""Reading ``/v1/chat/completions`` and ``/v1/completions`` bodies into typed requests.

Validation follows OpenAI's rules and error messages closely enough that a client
written against OpenAI understands the refusal: a 400 naming the ``param``. What the
local models cannot do (streaming, logprobs, audio, ...) is refused here too, so a
request never gets silently less than it asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from batchd.backends.local.errors import RequestError, invalid, unsupported
from batchd.backends.local.grammars import ToolPlan, grammar_for_response_format, plan_tools

JSON = dict[str, Any]

# Parameters OpenAI accepts that change nothing for a local model: they are
# bookkeeping (user, metadata, store...) or hints a single local model satisfies.
_IGNORED_CHAT = frozenset(
    {
        "model",
        "user",
        "metadata",
        "store",
        "service_tier",
        "parallel_tool_calls",
        "prompt_cache_key",
        "safety_identifier",
        "stream_options",
        "verbosity",
    }
)
_IGNORED_COMPLETION = frozenset({"model", "user", "stream_options"})
_MAX_N = 128
_MAX_STOP = 4


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick tokens and when to stop, for one sequence."""

    max_tokens: int | None = None
    """Completion length limit; None means the model's configured default."""
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    grammar: str | None = None
    """A GBNF grammar (root rule ``root``) every completion must match."""

    @property
    def is_greedy_plain(self) -> bool:
        """True when the next token is just the argmax of the logits."""
        return (
            self.temperature == 0.0
            and self.grammar is None
            and not self.logit_bias
            and self.frequency_penalty == 0.0
            and self.presence_penalty == 0.0
        )


@dataclass(slots=True)
class ChatRequest:
    """A validated chat completion request."""

    model: str
    messages: list[JSON]
    """Messages with plain-text ``content`` (parts flattened), ready for the chat template."""
    params: SamplingParams
    n: int = 1
    tools: ToolPlan | None = None
    """Set when the answer must be a tool call (``tool_choice`` required or named)."""


@dataclass(slots=True)
class CompletionRequest:
    """A validated text completion request (one or more prompts)."""

    model: str
    prompts: list[str | list[int]]
    params: SamplingParams
    n: int = 1
    echo: bool = False
    extra: JSON = field(default_factory=dict)


def parse_json_object(body: bytes) -> JSON:
    """The request body as a JSON object, or a 400."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object.")
    return data


def model_name(body: JSON) -> str:
    """The ``model`` field, or a 400."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("You must provide a model parameter.", param="model")
    return model


def parse_chat(body: JSON) -> ChatRequest:
    """Validate a ``/v1/chat/completions`` body."""
    _reject_unknown(body, _CHAT_KEYS | _IGNORED_CHAT)
    _reject_common(body)
    for name in ("logprobs",):
        if body.get(name):
            raise unsupported(name, f"'{name}' is not supported by the local models.")
    if body.get("top_logprobs") is not None:
        raise unsupported("top_logprobs", "'top_logprobs' is not supported by the local models.")
    for name in ("audio", "prediction", "web_search_options"):
        if body.get(name) is not None:
            raise unsupported(name, f"'{name}' is not supported by the local models.")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise unsupported("modalities", "The local models only produce text.")
    if body.get("reasoning_effort") is not None:
        raise unsupported("reasoning_effort", "The local models are not reasoning models.")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise unsupported(
            "functions", "'functions'/'function_call' are deprecated; use 'tools'/'tool_choice'."
        )

    messages = _parse_messages(body.get("messages"))
    max_tokens = body.get("max_completion_tokens")
    max_param = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, max_param = body.get("max_tokens"), "max_tokens"
    tools = plan_tools(body.get("tools"), body.get("tool_choice"))
    grammar = (
        tools.grammar
        if tools is not None
        else grammar_for_response_format(body.get("response_format"))
    )
    params = _sampling(body, max_tokens, max_param, grammar)
    return ChatRequest(
        model=model_name(body), messages=messages, params=params, n=_n(body), tools=tools
    )


def parse_completion(body: JSON) -> CompletionRequest:
    """Validate a ``/v1/completions`` body."""
    _reject_unknown(body, _COMPLETION_KEYS | _IGNORED_COMPLETION)
    _reject_common(body)
    if body.get("logprobs") is not None:
        raise unsupported("logprobs", "'logprobs' is not supported by the local models.")
    if body.get("suffix") is not None:
        raise unsupported("suffix", "'suffix' (insertion) is not supported by the local models.")
    n = _n(body)
    best_of = body.get("best_of")
    if best_of is not None and best_of != n and not (best_of == 1 and n == 1):
        raise unsupported("best_of", "'best_of' other than n is not supported by the local models.")
    echo = body.get("echo", False)
    if not isinstance(echo, bool):
        raise invalid("echo", "'echo' must be a boolean.")
    # OpenAI's default for /v1/completions is 16 tokens.
    max_tokens = body.get("max_tokens", 16)
    params = _sampling(body, max_tokens, "max_tokens", None)
    return CompletionRequest(
        model=model_name(body),
        prompts=_parse_prompts(body.get("prompt")),
        params=params,
        n=n,
        echo=echo,
    )


_COMMON_KEYS = frozenset(
    {
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "stop",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "stream",
    }
)
_CHAT_KEYS = _COMMON_KEYS | {
    "messages",
    "max_completion_tokens",
    "response_format",
    "tools",
    "tool_choice",
    "top_logprobs",
    "audio",
    "modalities",
    "prediction",
    "reasoning_effort",
    "web_search_options",
    "functions",
    "function_call",
}
_COMPLETION_KEYS = _COMMON_KEYS | {"prompt", "echo", "suffix", "best_of"}


def _reject_unknown(body: JSON, known: frozenset[str]) -> None:
    for key in body:
        if key not in known:
            raise RequestError(
                f"Unrecognized request argument supplied: {key}",
                param=key,
                code="unknown_parameter",
            )


def _reject_common(body: JSON) -> None:
    if body.get("stream"):
        raise unsupported("stream", "Streaming is not available in a batch.")


def _parse_messages(raw: Any) -> list[JSON]:
    if not isinstance(raw, list) or not raw:
        raise RequestError("'messages' must be a non-empty array.", param="messages")
    out: list[JSON] = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise invalid(where, f"{where} must be an object.")
        role = msg.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise invalid(f"{where}.role", f"{where}.role {role!r} is not supported.")
        content = _flatten_content(msg.get("content"), f"{where}.content")
        if role == "assistant" and msg.get("tool_calls"):
            # The chat template has no place for tool calls: show them to the model
            # as the JSON they were.
            calls = [
                {
                    "name": c.get("function", {}).get("name"),
                    "arguments": c.get("function", {}).get("arguments"),
                }
                for c in msg["tool_calls"]
                if isinstance(c, dict)
            ]
            content = (content + "\n" if content else "") + json.dumps(calls)
        elif content is None:
            if role != "assistant":
                raise invalid(f"{where}.content", f"{where}.content is required.")
            content = ""
        out.append({"role": role, "content": content})
    return out


def _flatten_content(content: Any, where: str) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(where, f"{where} must be a string or an array of content parts.")
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            raise invalid(where, f"{where} parts must be objects.")
        kind = part.get("type")
        if kind in ("text", "input_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise unsupported(
                where,
                f"Content part type {kind!r} is not supported by the local models (text only).",
            )
    return "\n".join(texts)


def _parse_prompts(raw: Any) -> list[str | list[int]]:
    def is_tokens(x: Any) -> bool:
        return (
            isinstance(x, list)
            and bool(x)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
        )

    if isinstance(raw, str):
        return [raw]
    if is_tokens(raw):
        return [list(raw)]
    if isinstance(raw, list) and raw and all(isinstance(p, str) or is_tokens(p) for p in raw):
        return list(raw)
    raise RequestError(
        "'prompt' must be a string, an array of strings, an array of token ids, or an "
        "array of token-id arrays.",
        param="prompt",
    )


def _n(body: JSON) -> int:
    n = body.get("n", 1)
    if n is None:
        return 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= _MAX_N:
        raise invalid("n", f"'n' must be an integer from 1 to {_MAX_N}.")
    return n


def _number(body: JSON, name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise invalid(name, f"'{name}' must be a number from {lo:g} to {hi:g}.")
    return float(value)


def _sampling(body: JSON, max_tokens: Any, max_param: str, grammar: str | None) -> SamplingParams:
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise invalid(max_param, f"'{max_param}' must be a positive integer.")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise invalid("seed", "'seed' must be an integer.")
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=top_p,
        seed=seed,
        stop=_stop(body.get("stop")),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        logit_bias=_logit_bias(body.get("logit_bias")),
        grammar=grammar,
    )


def _stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if (
        not isinstance(raw, list)
        or len(raw) > _MAX_STOP
        or not all(isinstance(s, str) and s for s in raw)
    ):
        raise invalid("stop", f"'stop' must be a non-empty string or up to {_MAX_STOP} of them.")
    return tuple(raw)


def _logit_bias(raw: Any) -> tuple[tuple[int, float], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise invalid("logit_bias", "'logit_bias' must map token ids to numbers.")
    out: list[tuple[int, float]] = []
    for key, value in raw.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise invalid("logit_bias", f"logit_bias key {key!r} is not a token id.") from None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not -100 <= value <= 100
        ):
            raise invalid("logit_bias", "logit_bias values must be numbers from -100 to 100.")
        out.append((token, float(value)))
    return tuple(out)
