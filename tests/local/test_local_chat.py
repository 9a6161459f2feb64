"""Chat and text completions through LocalBackend.send, with the real SmolLM2 model."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

pytest.importorskip("llama_cpp")

from local.util import CHAT_MODEL, chat_body, send

pytestmark = pytest.mark.local

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"

REVIEWS = [
    "The blender broke after two days. Terrible.",
    "Absolutely love these headphones, the sound is amazing!",
    "It's fine. Does what it says, nothing more.",
    "Shipping took a month and the box was crushed.",
    "Best purchase I made this year, highly recommend.",
    "The color is slightly different from the picture but okay.",
]
SENTIMENT_SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confident": {"type": "boolean"},
    },
    "required": ["sentiment", "confident"],
    "additionalProperties": False,
}


def review_chat(review: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": CHAT_MODEL,
        "messages": [
            {"role": "system", "content": "Classify the sentiment of the product review."},
            {"role": "user", "content": review},
        ],
        **extra,
    }


def check_chat_shape(answer: dict[str, Any], n: int = 1) -> None:
    assert answer["object"] == "chat.completion"
    assert answer["id"].startswith("chatcmpl-")
    assert isinstance(answer["created"], int)
    assert answer["model"] == CHAT_MODEL
    assert [c["index"] for c in answer["choices"]] == list(range(n))
    for choice in answer["choices"]:
        assert choice["message"]["role"] == "assistant"
        assert choice["logprobs"] is None
        assert choice["finish_reason"] in ("stop", "length", "tool_calls")
    usage = answer["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] > 0


def validate(value: Any, schema: dict[str, Any]) -> None:
    try:
        import jsonschema
    except ImportError:  # check the structure by hand
        assert isinstance(value, dict) and set(value) == set(schema["required"])
        assert value["sentiment"] in ("positive", "negative", "neutral")
        assert isinstance(value["confident"], bool)
    else:
        jsonschema.validate(value, schema)


def test_chat_batch_shape_usage_and_finish_reasons(backend: Any) -> None:
    async def main() -> list[tuple[int, Any]]:
        bodies = [review_chat(r, max_tokens=4, temperature=0) for r in REVIEWS]
        # Grammar-constrained answers end with the grammar, so they finish with "stop".
        bodies += [
            review_chat(
                r,
                max_tokens=48,
                temperature=0,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "s", "schema": SENTIMENT_SCHEMA},
                },
            )
            for r in REVIEWS[:2]
        ]
        return await asyncio.gather(*(send(backend, CHAT, b) for b in bodies))

    results = asyncio.run(main())
    for status, answer in results:
        assert status == 200, answer
        check_chat_shape(answer)
    for _, answer in results[: len(REVIEWS)]:
        assert answer["choices"][0]["finish_reason"] == "length"
        assert answer["usage"]["completion_tokens"] == 4
        assert answer["choices"][0]["message"]["content"]
    for _, answer in results[len(REVIEWS) :]:
        assert answer["choices"][0]["finish_reason"] == "stop"
        assert answer["usage"]["completion_tokens"] < 48
    # The same prompt counts the same (exact counts: test_prompt_matches_llama_cpp_chat_template).
    assert (
        results[0][1]["usage"]["prompt_tokens"]
        == results[len(REVIEWS)][1]["usage"]["prompt_tokens"]
    )


def test_prompt_matches_llama_cpp_chat_template(backend: Any) -> None:
    """The prompt is the GGUF chat template's, tokenized as create_chat_completion does."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    body = review_chat(REVIEWS[0], max_tokens=1, temperature=0)
    status, answer = asyncio.run(send(backend, CHAT, body))
    assert status == 200
    engine = backend.chat_engine(CHAT_MODEL)
    rt = engine._rt
    formatter = Jinja2ChatFormatter(
        rt.chat_template(), rt.token_text(rt.eos), rt.token_text(rt.bos)
    )
    text = formatter(messages=body["messages"]).prompt
    assert text.startswith("<|im_start|>system\nClassify")
    assert text.endswith("<|im_start|>assistant\n")
    tokens = rt.tokenize(text, add_special=False, parse_special=True)
    assert answer["usage"]["prompt_tokens"] == len(tokens)


def test_json_schema_batch_always_validates(backend: Any) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "sentiment", "schema": SENTIMENT_SCHEMA, "strict": True},
    }

    async def main() -> list[tuple[int, Any]]:
        return await asyncio.gather(
            *(
                send(
                    backend,
                    CHAT,
                    review_chat(r, max_tokens=48, temperature=0.7, seed=i, response_format=fmt),
                )
                for i, r in enumerate(REVIEWS)
            )
        )

    for status, answer in asyncio.run(main()):
        assert status == 200, answer
        choice = answer["choices"][0]
        assert choice["finish_reason"] == "stop"
        validate(json.loads(choice["message"]["content"]), SENTIMENT_SCHEMA)


def test_json_object(backend: Any) -> None:
    body = chat_body(
        "Describe a cat as a JSON object with a name and an age.",
        max_tokens=64,
        temperature=0,
        response_format={"type": "json_object"},
    )
    status, answer = asyncio.run(send(backend, CHAT, body))
    assert status == 200, answer
    choice = answer["choices"][0]
    if choice["finish_reason"] == "stop":
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    else:  # cut by max_tokens: still the start of an object
        assert choice["message"]["content"].lstrip().startswith("{")


def test_stop_sequences(backend: Any) -> None:
    async def main() -> tuple[tuple[int, Any], tuple[int, Any]]:
        plain = send(
            backend,
            COMPLETIONS,
            {"model": CHAT_MODEL, "prompt": "1, 2, 3, 4,", "max_tokens": 12, "temperature": 0},
        )
        stopped = send(
            backend,
            COMPLETIONS,
            {
                "model": CHAT_MODEL,
                "prompt": "1, 2, 3, 4,",
                "max_tokens": 12,
                "temperature": 0,
                "stop": [" 7", "\n\n"],
            },
        )
        return await asyncio.gather(plain, stopped)

    (s1, plain), (s2, stopped) = asyncio.run(main())
    assert s1 == 200 and s2 == 200
    full = plain["choices"][0]["text"]
    cut = stopped["choices"][0]["text"]
    assert " 7" in full, full  # greedy continues the count
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert " 7" not in cut
    assert full.startswith(cut)
    assert stopped["usage"]["completion_tokens"] < plain["usage"]["completion_tokens"]


def test_seed_reproducible_at_temperature(backend: Any) -> None:
    """The same seeded batch on a fresh engine gives the same answers; seeds differ.

    (Like OpenAI's, determinism is best effort: a sequence decoded in a different
    batch composition can see logits that differ in the last bits.)
    """
    from batchd.backends.local import LocalBackend

    def body(seed: int) -> dict[str, Any]:
        return chat_body(
            "Invent a name for a pet dragon.", max_tokens=16, temperature=1.0, seed=seed
        )

    async def run() -> list[str]:
        fresh = LocalBackend(backend.config)
        try:
            results = await asyncio.gather(*(send(fresh, CHAT, body(s)) for s in (1234, 1, 2)))
        finally:
            await fresh.aclose()
        assert all(status == 200 for status, _ in results)
        return [a["choices"][0]["message"]["content"] for _, a in results]

    first, second = asyncio.run(run()), asyncio.run(run())
    assert first == second
    assert len(set(first)) > 1


def test_n_choices(backend: Any) -> None:
    body = chat_body("Give me a random fruit.", max_tokens=8, temperature=1.0, seed=5, n=3)
    status, answer = asyncio.run(send(backend, CHAT, body))
    assert status == 200, answer
    check_chat_shape(answer, n=3)
    total = sum(8 if c["finish_reason"] == "length" else 0 for c in answer["choices"])
    assert answer["usage"]["completion_tokens"] >= total
    single = asyncio.run(send(backend, CHAT, {**body, "n": 1}))[1]
    assert answer["usage"]["prompt_tokens"] == single["usage"]["prompt_tokens"]
    for bad in (0, 1000, "2"):
        status, err = asyncio.run(send(backend, CHAT, {**body, "n": bad}))
        assert status == 400 and err["error"]["param"] == "n"


def test_text_completions_prompts_n_and_echo(backend: Any) -> None:
    body = {
        "model": CHAT_MODEL,
        "prompt": ["The capital of France is", "Roses are red,"],
        "max_tokens": 5,
        "temperature": 0,
        "n": 2,
        "echo": True,
    }
    status, answer = asyncio.run(send(backend, COMPLETIONS, body))
    assert status == 200, answer
    assert answer["object"] == "text_completion" and answer["id"].startswith("cmpl-")
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2, 3]
    assert answer["choices"][0]["text"].startswith("The capital of France is")
    assert answer["choices"][2]["text"].startswith("Roses are red,")
    assert all(c["logprobs"] is None for c in answer["choices"])
    status, answer = asyncio.run(
        send(
            backend,
            COMPLETIONS,
            {"model": CHAT_MODEL, "prompt": [504, 40380, 10764], "max_tokens": 2},
        )
    )
    assert status == 200 and answer["usage"]["prompt_tokens"] == 3


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a timezone",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string"}},
                "required": ["timezone"],
                "additionalProperties": False,
            },
        },
    },
]


def test_tools(backend: Any) -> None:
    ask = "What is the weather in Paris right now?"

    async def main() -> list[tuple[int, Any]]:
        return await asyncio.gather(
            send(
                backend,
                CHAT,
                chat_body(ask, max_tokens=48, temperature=0, tools=TOOLS, tool_choice="required"),
            ),
            send(
                backend,
                CHAT,
                chat_body(
                    ask,
                    max_tokens=48,
                    temperature=0,
                    tools=TOOLS,
                    tool_choice={"type": "function", "function": {"name": "get_weather"}},
                ),
            ),
            send(backend, CHAT, chat_body(ask, max_tokens=4, tools=TOOLS, tool_choice="none")),
            send(backend, CHAT, chat_body(ask, max_tokens=4, tools=TOOLS)),
            send(backend, CHAT, chat_body(ask, max_tokens=4, tool_choice="required")),
            send(
                backend,
                CHAT,
                chat_body(
                    ask, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}
                ),
            ),
        )

    (s1, required), (s2, named), (s3, none), (s4, auto), (s5, no_tools), (s6, _unknown) = (
        asyncio.run(main())
    )
    assert s1 == 200, required
    choice = required["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] in ("get_weather", "get_time")
    args = json.loads(call["function"]["arguments"])
    assert set(args) == ({"city"} if call["function"]["name"] == "get_weather" else {"timezone"})

    assert s2 == 200, named
    choice = named["choices"][0]
    assert choice["finish_reason"] == "stop"  # what OpenAI answers for a named tool_choice
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)

    assert s3 == 200 and "tool_calls" not in none["choices"][0]["message"]
    assert s4 == 400 and auto["error"]["param"] == "tool_choice"
    assert s5 == 400 and no_tools["error"]["param"] == "tool_choice"
    assert s6 == 400


@pytest.mark.parametrize(
    ("endpoint", "body", "status", "param"),
    [
        (
            CHAT,
            {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]},
            404,
            "model",
        ),
        (CHAT, {"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
        (CHAT, {"model": CHAT_MODEL, "messages": []}, 400, "messages"),
        (
            CHAT,
            {"model": CHAT_MODEL, "messages": [{"role": "wizard", "content": "x"}]},
            400,
            "messages[0].role",
        ),
        (CHAT, chat_body("x", stream=True), 400, "stream"),
        (CHAT, chat_body("x", logprobs=True), 400, "logprobs"),
        (CHAT, chat_body("x", temperature=3), 400, "temperature"),
        (CHAT, chat_body("x", max_tokens=0), 400, "max_tokens"),
        (CHAT, chat_body("x", stop=["a", "b", "c", "d", "e"]), 400, "stop"),
        (CHAT, chat_body("x", frobnicate=1), 400, "frobnicate"),
        (CHAT, chat_body("x", response_format={"type": "xml"}), 400, "response_format.type"),
        (CHAT, chat_body("x", max_tokens=100_000), 400, "messages"),
        (
            CHAT,
            {
                "model": CHAT_MODEL,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x"}}],
                    }
                ],
            },
            400,
            "messages[0].content",
        ),
        (COMPLETIONS, {"model": CHAT_MODEL, "prompt": {"a": 1}}, 400, "prompt"),
        (COMPLETIONS, {"model": CHAT_MODEL, "prompt": "x", "suffix": "y"}, 400, "suffix"),
        ("/v1/embeddings", {"model": CHAT_MODEL, "input": "x"}, 400, "model"),
        ("/v1/responses", {"model": CHAT_MODEL, "input": "x"}, 400, None),
    ],
)
def test_bad_requests(
    backend: Any, endpoint: str, body: dict[str, Any], status: int, param: str | None
) -> None:
    got, answer = asyncio.run(send(backend, endpoint, body))
    assert got == status, answer
    assert answer["error"]["param"] == param
    assert answer["error"]["message"]


def test_not_json(backend: Any) -> None:
    resp = asyncio.run(backend.send(CHAT, b"{nope"))
    assert resp.status_code == 400
    assert json.loads(resp.body)["error"]["type"] == "invalid_request_error"


def test_event_loop_stays_responsive(backend: Any) -> None:
    """Inference runs on worker threads: a ticker on the loop keeps ticking."""

    async def main() -> tuple[float, int]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        task = asyncio.create_task(ticker())
        results = await asyncio.gather(
            *(
                send(backend, CHAT, review_chat(r, max_tokens=24, temperature=0))
                for r in REVIEWS * 2
            )
        )
        done.set()
        await task
        assert all(s == 200 for s, _ in results)
        return max(gaps), len(gaps)

    worst, ticks = asyncio.run(main())
    assert ticks > 10
    assert worst < 0.5, f"event loop blocked for {worst:.3f}s"


def test_cancelled_request_frees_its_slot(backend: Any) -> None:
    async def main() -> tuple[int, Any]:
        # End-of-generation tokens banned: this one would run for all its 200 tokens.
        no_end = {"0": -100, "2": -100, "4": -100}
        task = asyncio.create_task(
            send(backend, CHAT, chat_body("Tell a long story.", max_tokens=200, logit_bias=no_end))
        )
        # Cancelled while it holds a slot (generating), not before it got one.
        engine = backend.chat_engine(CHAT_MODEL)
        deadline = time.monotonic() + 30
        while not engine._active:
            assert time.monotonic() < deadline, "the request never started generating"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await send(backend, CHAT, chat_body("Hi", max_tokens=2))

    status, answer = asyncio.run(main())
    assert status == 200 and answer["usage"]["completion_tokens"] == 2
    engine = backend.chat_engine(CHAT_MODEL)
    deadline = time.monotonic() + 10
    while engine._active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine._active


def test_small_kv_cache_and_few_slots_still_answer_everything(backend: Any) -> None:
    """Requests wait for a slot and for KV room; n larger than max_batch works too."""
    from batchd.backends.local import LocalBackend, LocalModelsConfig

    chat = {**backend.config.chat[CHAT_MODEL].model_dump(), "n_ctx": 512, "max_batch": 3}
    small = LocalBackend(LocalModelsConfig.model_validate({"chat": {CHAT_MODEL: chat}}))

    async def main() -> list[tuple[int, Any]]:
        try:
            # A review reserves its prompt (~40) + 150 tokens of the 512 cells: at most
            # two run at once (the short n=5 request can join them in the third slot).
            bodies = [review_chat(r, max_tokens=150, temperature=0) for r in REVIEWS]
            bodies.append(chat_body("Name a colour.", max_tokens=6, temperature=1.0, n=5))
            return await asyncio.gather(*(send(small, CHAT, b) for b in bodies))
        finally:
            await small.aclose()

    results = asyncio.run(main())
    assert all(status == 200 for status, _ in results), results
    assert len(results[-1][1]["choices"]) == 5
    stats = small.chat_engine(CHAT_MODEL).stats
    assert stats.max_active <= 3
    assert stats.preemptions == 0  # admission kept within the KV cache
