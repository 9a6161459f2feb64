"""Queue limits count an embedded chat model's prompt tokens with its own tokenizer."""

from __future__ import annotations

from batchd.backends.local import LocalBackend
from batchd.backends.router import Route, Router
from batchd.tokens import CHARS_PER_TOKEN, PromptTokens

MODEL = "smollm2-135m-instruct"
TEXT = "Classify the sentiment of this review: the soup was cold, the staff were lovely."


def test_embedded_chat_model_counts_with_its_tokenizer() -> None:
    backend = LocalBackend()
    router = Router([], fallback=Route("*", backend, 8))
    encode = router.tokenizer_for(MODEL)
    assert encode is not None
    ids = encode(TEXT)
    assert 0 < len(ids) < len(TEXT)
    count = PromptTokens(router.tokenizer_for)
    body = {"model": MODEL, "messages": [{"role": "user", "content": TEXT}]}
    assert count(MODEL, body) == len(ids)
    # Not the estimate: the two differ for this text, so the test tells them apart.
    assert len(ids) != (len(TEXT) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def test_models_without_a_tokenizer_are_estimated() -> None:
    router = Router([], fallback=Route("*", LocalBackend(), 8))
    assert router.tokenizer_for("gpt-4o-mini") is None  # nothing routes it
    assert router.tokenizer_for("all-minilm-l6-v2") is None  # not a chat model
    count = PromptTokens(router.tokenizer_for)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 40}]}
    assert count("gpt-4o-mini", body) == 10
