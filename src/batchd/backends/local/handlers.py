"""One coroutine per endpoint: validate the body, run the model, shape the answer.

Each handler returns the OpenAI response object as a dict; refusals are
:class:`RequestError` (turned into error bodies by :class:`LocalBackend`).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any

from batchd.backends.local import shapes
from batchd.backends.local.chat import ChatEngine, GenerationJob, GenerationOutput
from batchd.backends.local.config import EmbeddingModelConfig, ModerationModelConfig
from batchd.backends.local.embeddings import Embedded, EmbeddingModel
from batchd.backends.local.errors import RequestError, invalid, unsupported
from batchd.backends.local.moderation import ProfanityModel, result
from batchd.backends.local.params import ChatRequest, CompletionRequest
from batchd.backends.local.worker import BatchWorker

JSON = dict[str, Any]
EmbeddingWorker = BatchWorker[EmbeddingModel, str, Embedded]
ModerationWorker = BatchWorker[ProfanityModel, str, float]

_MAX_INPUTS = 2048  # OpenAI's limit on inputs per embeddings request


# -- chat and text completions ---------------------------------------------------------


def _with_tool_instructions(request: ChatRequest) -> list[JSON]:
    """The messages, with the forced tool call explained in the system message."""
    messages = list(request.messages)
    if request.tools is None:
        return messages
    note = request.tools.instructions()
    if messages and messages[0]["role"] == "system":
        messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{note}"}
    else:
        messages.insert(0, {"role": "system", "content": note})
    return messages


async def chat_completion(engine: ChatEngine, request: ChatRequest) -> JSON:
    """Answer a ``/v1/chat/completions`` request."""
    job = GenerationJob(request.params, messages=_with_tool_instructions(request), n=request.n)
    output = await engine.generate(job)
    choices: list[JSON] = []
    for i, choice in enumerate(output.choices):
        plan = request.tools
        call = plan.read_call(choice.text) if plan is not None else None
        if plan is not None and call is not None:
            name, arguments = call
            reason = plan.finish_reason if choice.finish_reason == "stop" else choice.finish_reason
            choices.append(shapes.chat_choice(i, None, reason, [shapes.tool_call(name, arguments)]))
        else:
            # Plain text, or a forced tool call cut short by max_tokens: what was
            # written is returned as content so the caller can see why.
            choices.append(shapes.chat_choice(i, choice.text, choice.finish_reason))
    return shapes.chat_completion(
        request.model, choices, output.prompt_tokens, _completion_tokens([output])
    )


async def text_completion(engine: ChatEngine, request: CompletionRequest) -> JSON:
    """Answer a ``/v1/completions`` request (every prompt, ``n`` choices each)."""
    outputs: list[GenerationOutput] = await asyncio.gather(
        *(
            engine.generate(GenerationJob(request.params, prompt=p, n=request.n))
            for p in request.prompts
        )
    )
    choices: list[JSON] = []
    for prompt, output in zip(request.prompts, outputs, strict=True):
        # Token-id prompts cannot be echoed as text without detokenizing; echo
        # applies to string prompts (the common case).
        prefix = prompt if request.echo and isinstance(prompt, str) else ""
        for choice in output.choices:
            choices.append(
                shapes.text_choice(len(choices), prefix + choice.text, choice.finish_reason)
            )
    prompt_tokens = sum(o.prompt_tokens for o in outputs)
    return shapes.text_completion(
        request.model, choices, prompt_tokens, _completion_tokens(outputs)
    )


def _completion_tokens(outputs: Sequence[GenerationOutput]) -> int:
    return sum(c.completion_tokens for o in outputs for c in o.choices)


# -- embeddings ---------------------------------------------------------------------------

_EMBEDDING_KEYS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})


async def embeddings(
    worker: EmbeddingWorker, config: EmbeddingModelConfig, model: str, body: JSON
) -> JSON:
    """Answer a ``/v1/embeddings`` request."""
    _reject_unknown(body, _EMBEDDING_KEYS)
    texts = _embedding_inputs(body.get("input"))
    encoding = body.get("encoding_format", "float") or "float"
    if encoding not in ("float", "base64"):
        raise invalid("encoding_format", "'encoding_format' must be 'float' or 'base64'.")
    dimensions = body.get("dimensions")
    if dimensions is not None and dimensions != config.dimensions:
        raise unsupported(
            "dimensions",
            f"Model {model!r} produces {config.dimensions}-dimensional embeddings only; "
            "omit 'dimensions' or set it to that.",
        )
    embedded = await asyncio.gather(*(worker.submit(t) for t in texts))
    vectors: list[Any] = [
        base64.b64encode(e.vector.astype("<f4").tobytes()).decode("ascii")
        if encoding == "base64"
        else e.vector
        for e in embedded
    ]
    return shapes.embedding_list(model, vectors, sum(e.tokens for e in embedded))


def _embedding_inputs(raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise invalid("input", "'input' must be a non-empty string or array of strings.")
    if any(isinstance(x, int | list) for x in raw):
        raise unsupported(
            "input",
            "Token-id arrays are not supported by the local embedding models; send text.",
        )
    if not all(isinstance(x, str) for x in raw):
        raise invalid("input", "'input' must be a string or an array of strings.")
    if len(raw) > _MAX_INPUTS:
        raise invalid("input", f"'input' may hold at most {_MAX_INPUTS} strings.")
    if any(not x for x in raw):
        raise invalid("input", "'input' must not contain empty strings.")
    return list(raw)


# -- moderations ----------------------------------------------------------------------------

_MODERATION_KEYS = frozenset({"model", "input"})


async def moderations(
    worker: ModerationWorker, config: ModerationModelConfig, model: str, body: JSON
) -> JSON:
    """Answer a ``/v1/moderations`` request."""
    _reject_unknown(body, _MODERATION_KEYS)
    texts = _moderation_inputs(body.get("input"))
    scores = await asyncio.gather(*(worker.submit(t) for t in texts))
    return shapes.moderation(model, [result(s, config) for s in scores])


def _moderation_inputs(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not raw:
        raise invalid("input", "'input' must be a string or a non-empty array.")
    texts: list[str] = []
    for item in raw:
        if isinstance(item, str):
            texts.append(item)
        elif (
            isinstance(item, dict)
            and item.get("type") == "text"
            and isinstance(item.get("text"), str)
        ):
            texts.append(item["text"])
        elif isinstance(item, dict) and item.get("type") == "image_url":
            raise unsupported("input", "The local moderation model scores text only.")
        else:
            raise invalid("input", "'input' items must be strings or {type: 'text'} objects.")
    return texts


def _reject_unknown(body: JSON, known: frozenset[str]) -> None:
    for key in body:
        if key not in known:
            raise RequestError(
                f"Unrecognized request argument supplied: {key}",
                param=key,
                code="unknown_parameter",
            )


def embedding_worker(name: str, config: EmbeddingModelConfig, window_s: float) -> EmbeddingWorker:
    """The micro-batching worker of one embedding model."""
    return BatchWorker(
        f"embeddings-{name}",
        lambda: EmbeddingModel(config),
        lambda model, texts: model.embed(texts),
        # Gather several sub-batches at once: sorting a larger pool by length
        # leaves less padding in each sub-batch.
        max_batch=config.max_batch * 4,
        window_s=window_s,
    )


def moderation_worker(
    name: str, config: ModerationModelConfig, window_s: float
) -> ModerationWorker:
    """The micro-batching worker of one moderation model."""
    return BatchWorker(
        f"moderation-{name}",
        ProfanityModel,
        lambda model, texts: model.scores(texts),
        max_batch=config.max_batch,
        window_s=window_s,
    )
