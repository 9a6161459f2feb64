"""``LocalBackend``: batchd's embedded models behind the :class:`Backend` protocol.

It routes each request by endpoint and model to the model's engine, each engine
gathering concurrent requests into batches on its own worker thread (the event
loop only parses and shapes JSON). Models load lazily, on their first request.
Every outcome is a :class:`BackendResponse`: 200 with OpenAI's object, 400 for a
request the local models refuse, 404 ``model_not_found`` for an unknown model,
500 if a model fails (e.g. its file is missing).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from batchd.backends.base import BackendResponse, error_body
from batchd.backends.local import handlers
from batchd.backends.local.chat import ChatEngine
from batchd.backends.local.config import LocalModelsConfig
from batchd.backends.local.errors import RequestError
from batchd.backends.local.params import model_name, parse_chat, parse_completion, parse_json_object
from batchd.backends.local.vocab import Vocabularies

log = logging.getLogger(__name__)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
MODERATIONS = "/v1/moderations"
ENDPOINTS = (CHAT, COMPLETIONS, EMBEDDINGS, MODERATIONS)

JSON = dict[str, Any]
_Handler = Callable[[str, str, JSON], Awaitable[JSON]]


class LocalBackend:
    """The embedded models: chat/completions (llama.cpp), embeddings (onnxruntime),
    moderations (profanity_check). Construct with ``LocalBackend()`` for the defaults
    or ``LocalBackend(LocalModelsConfig(...))``."""

    name = "local"

    def __init__(self, config: LocalModelsConfig | None = None) -> None:
        self.config = config if config is not None else LocalModelsConfig()
        window_s = self.config.batch_window_ms / 1000.0
        self._vocab = Vocabularies(self.config.chat)
        self._chat = {
            name: ChatEngine(name, cfg, window_s=window_s) for name, cfg in self.config.chat.items()
        }
        self._embeddings = {
            name: handlers.embedding_worker(name, cfg, window_s)
            for name, cfg in self.config.embeddings.items()
        }
        self._moderation = {
            name: handlers.moderation_worker(name, cfg, window_s)
            for name, cfg in self.config.moderation.items()
        }
        # Endpoint -> handler; each handler finds the model it was asked for.
        self._handlers: dict[str, _Handler] = {
            CHAT: self._chat_completion,
            COMPLETIONS: self._completions,
            EMBEDDINGS: self._embed,
            MODERATIONS: self._moderate,
        }

    def model_ids(self) -> list[str]:
        return self.config.model_ids()

    def tokenizer_for(self, model: str) -> Callable[[str], list[int]] | None:
        """The chat model's own tokenizer (read by queue limits to count prompt tokens)."""
        return self._vocab.encoder(model)

    def endpoints_for(self, model: str) -> tuple[str, ...]:
        """The endpoints that answer ``model`` (read by the router for validation)."""
        if model in self.config.chat:
            return (CHAT, COMPLETIONS)
        if model in self.config.embeddings:
            return (EMBEDDINGS,)
        return (MODERATIONS,) if model in self.config.moderation else ()

    async def server_load(self) -> tuple[int, int] | None:
        """The chat engines' ``(running, waiting)`` sequences, summed: the load gauges a
        capacity-seeking dispatcher reads (as it reads vLLM's ``/metrics``), so it keeps
        every slot busy with a short line behind them instead of probing by timings."""
        loads = [engine.load() for engine in self._chat.values()]
        return sum(r for r, _ in loads), sum(w for _, w in loads)

    def chat_engine(self, model: str) -> ChatEngine:
        """The engine serving chat model ``model`` (for statistics and benchmarks)."""
        return self._chat[model]

    async def send(self, endpoint: str, body: bytes) -> BackendResponse:
        request_id = f"req_local_{uuid.uuid4().hex}"
        try:
            payload = await self._dispatch(_normalize(endpoint), body)
        except RequestError as exc:
            return BackendResponse(
                exc.status,
                error_body(exc.message, type_=exc.type_, code=exc.code, param=exc.param),
                request_id,
            )
        except Exception as exc:  # a model failed: never let a traceback escape
            log.exception("local backend failed on %s", endpoint)
            return BackendResponse(
                500,
                error_body(
                    f"The local model failed: {exc}", type_="server_error", code="local_model_error"
                ),
                request_id,
            )
        return BackendResponse(
            200, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), request_id
        )

    async def _dispatch(self, endpoint: str, body: bytes) -> JSON:
        handler = self._handlers.get(endpoint)
        if handler is None:
            raise RequestError(
                f"The local models do not serve {endpoint}; they serve "
                + ", ".join(ENDPOINTS)
                + ".",
                code="unsupported_endpoint",
            )
        data = parse_json_object(body)
        return await handler(endpoint, model_name(data), data)

    async def _chat_completion(self, endpoint: str, model: str, data: JSON) -> JSON:
        return await handlers.chat_completion(self._engine(model, endpoint), parse_chat(data))

    async def _completions(self, endpoint: str, model: str, data: JSON) -> JSON:
        engine = self._engine(model, endpoint)
        return await handlers.text_completion(engine, parse_completion(data))

    async def _embed(self, endpoint: str, model: str, data: JSON) -> JSON:
        worker = self._embeddings.get(model)
        if worker is None:
            raise self._wrong_model(model, endpoint)
        return await handlers.embeddings(worker, self.config.embeddings[model], model, data)

    async def _moderate(self, endpoint: str, model: str, data: JSON) -> JSON:
        moderator = self._moderation.get(model)
        if moderator is None:
            raise self._wrong_model(model, endpoint)
        return await handlers.moderations(moderator, self.config.moderation[model], model, data)

    def _engine(self, model: str, endpoint: str) -> ChatEngine:
        engine = self._chat.get(model)
        if engine is None:
            raise self._wrong_model(model, endpoint)
        return engine

    def _wrong_model(self, model: str, endpoint: str) -> RequestError:
        if model in self.model_ids():
            return RequestError(
                f"Model {model!r} is not served on {endpoint}.",
                param="model",
                code="model_not_supported",
            )
        return RequestError(
            f"The model `{model}` does not exist or you do not have access to it.",
            status=404,
            param="model",
            code="model_not_found",
        )

    async def aclose(self) -> None:
        """Stop every worker thread and free the models."""
        closers = [
            *(e.close for e in self._chat.values()),
            *(w.close for w in self._embeddings.values()),
            *(w.close for w in self._moderation.values()),
        ]
        await asyncio.gather(*(asyncio.to_thread(c) for c in closers))


def _normalize(endpoint: str) -> str:
    """``/v1/chat/completions/`` or ``/v1/embeddings?x=y`` -> the bare path."""
    path = endpoint.split("?", 1)[0].rstrip("/")
    return path if path.startswith("/") else "/" + path
