"""Which endpoints a routed model accepts (batch validation's model_not_found)."""

from __future__ import annotations

from batchd.backends.base import BackendResponse
from batchd.backends.router import Route, Router
from batchd.protocol import BATCH_ENDPOINTS


class Passthrough:
    """An OpenAI-compatible server: it answers for itself, so every endpoint is passed."""

    name = "remote"

    def model_ids(self) -> list[str]:
        return []

    async def send(self, endpoint: str, body: bytes) -> BackendResponse:
        raise AssertionError("not sent in these tests")

    async def aclose(self) -> None:
        return None


class Knowing(Passthrough):
    """A backend that knows its models' endpoints, as the embedded one does."""

    name = "known"

    def model_ids(self) -> list[str]:
        return ["chatty", "vectors"]

    def endpoints_for(self, model: str) -> tuple[str, ...]:
        return {"chatty": ("/v1/chat/completions",), "vectors": ("/v1/embeddings",)}[model]


def test_pass_through_backend_accepts_every_batch_endpoint() -> None:
    router = Router([Route("gpt-*", Passthrough(), 8)])
    assert router.endpoints_for("gpt-x") == BATCH_ENDPOINTS
    assert router.serves("gpt-x", "/v1/rerank")
    assert router.endpoints_for("claude") == ()
    assert not router.serves("claude", "/v1/chat/completions")


def test_a_backend_that_knows_its_endpoints_is_asked() -> None:
    router = Router([], fallback=Route("*", Knowing(), 8))
    assert router.serves("chatty", "/v1/chat/completions")
    assert not router.serves("chatty", "/v1/embeddings")
    assert router.serves("vectors", "/v1/embeddings")
    assert not router.serves("unknown", "/v1/embeddings")
