"""The chat engine's batching: shared prefixes, batched vs alone, load gauges; and the
local backend's thread owner and CPU-feature choice (no model needed for those)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from batchd.backends.local import cpu
from batchd.backends.local.threads import STOP, LazyModel, WorkerThread

CHAT = "/v1/chat/completions"
SYSTEM = (
    "You are a product review classifier for an online shop. Read the customer review "
    "and answer with exactly one word: positive, negative or neutral. Then give a "
    "one-sentence reason."
)
REVIEWS = [
    "The blender broke after two days. Terrible.",
    "Absolutely love these headphones, the sound is amazing!",
    "It's fine. Does what it says, nothing more.",
    "Shipping took a month and the box was crushed.",
    "Best purchase I made this year, highly recommend.",
    "The color is slightly different from the picture but okay.",
]


def _fresh(backend: Any, **chat: Any) -> Any:
    """A LocalBackend of its own (own engine, own counters) for the default chat model."""
    from batchd.backends.local import LocalBackend, LocalModelsConfig
    from local.util import CHAT_MODEL

    config = {**backend.config.chat[CHAT_MODEL].model_dump(), **chat}
    return LocalBackend(LocalModelsConfig.model_validate({"chat": {CHAT_MODEL: config}}))


def _labelling(review: str, max_tokens: int = 8) -> dict[str, Any]:
    from local.util import CHAT_MODEL

    return {
        "model": CHAT_MODEL,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": review}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


def _system_tokens(local: Any) -> int:
    from local.util import CHAT_MODEL

    rt = local.chat_engine(CHAT_MODEL)._rt
    return len(rt.tokenize(SYSTEM, add_special=False, parse_special=False))


@pytest.mark.local
@pytest.mark.parametrize("together", [True, False], ids=["concurrent", "one-after-another"])
def test_shared_system_prompt_is_prefilled_once(backend: Any, together: bool) -> None:
    """N requests sharing a system prompt run it through the model once, whether they
    arrive together or one after another (as a service trickles them in)."""
    pytest.importorskip("llama_cpp")
    from local.util import CHAT_MODEL, send

    local = _fresh(backend)

    async def main() -> list[tuple[int, Any]]:
        bodies = [_labelling(r) for r in REVIEWS]
        if together:
            return list(await asyncio.gather(*(send(local, CHAT, b) for b in bodies)))
        return [await send(local, CHAT, b) for b in bodies]

    results = asyncio.run(main())
    assert all(status == 200 for status, _ in results), results
    for _, answer in results:
        assert answer["choices"][0]["message"]["content"]
        assert 1 <= answer["usage"]["completion_tokens"] <= 8
    stats = local.chat_engine(CHAT_MODEL).stats
    prompt_tokens = sum(a["usage"]["prompt_tokens"] for _, a in results)
    system = _system_tokens(local)
    assert system > 20
    # Without sharing every prompt would be prefilled whole (prompt_tokens); with it,
    # the system prompt is prefilled for the first only.
    assert stats.prefill_tokens <= prompt_tokens - (len(REVIEWS) - 1) * system
    assert stats.shared_tokens >= (len(REVIEWS) - 1) * system
    asyncio.run(local.aclose())


@pytest.mark.local
@pytest.mark.parametrize("together", [True, False], ids=["concurrent", "one-after-another"])
def test_a_new_jobs_system_prompt_replaces_the_last_jobs_prefix(
    backend: Any, together: bool
) -> None:
    """After a job with another system prompt, the new job's system prompt is shared,
    whether its requests arrive together or one at a time (as the service sends them
    at first)."""
    pytest.importorskip("llama_cpp")
    from batchd.backends.local.generation import EngineStats
    from local.util import CHAT_MODEL, send

    local = _fresh(backend)
    earlier = [
        {
            **_labelling(r),
            "messages": [
                {"role": "system", "content": "Translate the review into French, word by word."},
                {"role": "user", "content": r},
            ],
        }
        for r in REVIEWS[:3]
    ]
    engine = local.chat_engine(CHAT_MODEL)

    async def main() -> list[tuple[int, Any]]:
        for body in earlier:
            assert (await send(local, CHAT, body))[0] == 200
        engine.stats = EngineStats()
        bodies = [_labelling(r) for r in REVIEWS]
        if together:
            return list(await asyncio.gather(*(send(local, CHAT, b) for b in bodies)))
        return [await send(local, CHAT, b) for b in bodies]

    results = asyncio.run(main())
    assert all(status == 200 for status, _ in results), results
    prompt_tokens = sum(a["usage"]["prompt_tokens"] for _, a in results)
    system = _system_tokens(local)
    # The system prompt is prefilled once (arriving one at a time, the first request
    # of the new job shares only the template's opening with the last job and prefills
    # it itself); every other request takes it from the cache.
    shared_by = len(REVIEWS) - (1 if together else 2)
    assert engine.stats.prefill_tokens <= prompt_tokens - shared_by * system
    asyncio.run(local.aclose())


@pytest.mark.local
def test_greedy_answer_batched_equals_alone(backend: Any) -> None:
    """A greedy sequence decoded among others gives what it gives alone."""
    pytest.importorskip("llama_cpp")
    from local.util import send

    alone_backend, batched_backend = _fresh(backend), _fresh(backend)
    body = _labelling(REVIEWS[0], max_tokens=12)

    async def main() -> tuple[Any, list[tuple[int, Any]]]:
        try:
            alone = await send(alone_backend, CHAT, body)
            others = [_labelling(r, max_tokens=12) for r in REVIEWS[1:]]
            sends = (send(batched_backend, CHAT, b) for b in [body, *others])
            together = await asyncio.gather(*sends)
            return alone, list(together)
        finally:
            await alone_backend.aclose()
            await batched_backend.aclose()

    (status, alone), together = asyncio.run(main())
    assert status == 200 and together[0][0] == 200
    assert together[0][1]["choices"][0]["message"] == alone["choices"][0]["message"]
    assert together[0][1]["usage"] == alone["usage"]


@pytest.mark.local
def test_server_load_reports_running_and_waiting(backend: Any) -> None:
    """The load gauges: at most max_batch running, the rest waiting, then idle."""
    pytest.importorskip("llama_cpp")
    from local.util import send

    local = _fresh(backend, max_batch=2)
    seen: list[tuple[int, int]] = []

    async def main() -> list[tuple[int, Any]]:
        try:
            assert await local.server_load() == (0, 0)
            tasks = [
                asyncio.create_task(send(local, CHAT, _labelling(r, max_tokens=16)))
                for r in REVIEWS
            ]
            while not all(t.done() for t in tasks):
                load = await local.server_load()
                assert load is not None
                seen.append(load)
                await asyncio.sleep(0.005)
            answers = list(await asyncio.gather(*tasks))
            for _ in range(200):  # the last retirement lands just after its answer
                if await local.server_load() == (0, 0):
                    break
                await asyncio.sleep(0.01)
            seen.append(await local.server_load() or (-1, -1))
            return answers
        finally:
            await local.aclose()

    answers = asyncio.run(main())
    assert all(status == 200 for status, _ in answers)
    assert max(r for r, _ in seen) == 2  # every slot busy, never more
    assert max(w for _, w in seen) >= 2  # the rest queued inside the engine
    assert all(r + w <= len(REVIEWS) for r, w in seen)
    assert seen[-1] == (0, 0)


# -- no model needed ----------------------------------------------------------------


def test_worker_thread_starts_on_first_put_and_stops_on_close() -> None:
    taken: list[Any] = []
    started = threading.Event()

    def main() -> None:
        started.set()
        while (item := owner.inbox.get()) is not STOP:
            taken.append(item)

    owner = WorkerThread("test-owner", main)
    assert not started.wait(0.05)  # nothing asked: no thread
    owner.put(1)
    owner.put(2)
    assert started.wait(5)
    owner.close()  # joins: everything queued before close was taken
    assert taken == [1, 2]
    with pytest.raises(RuntimeError, match="closed"):
        owner.put(3)
    owner.close()  # idempotent


def test_lazy_model_loads_once_and_remembers_a_failure() -> None:
    calls: list[int] = []

    def load() -> str:
        calls.append(1)
        return "model"

    lazy = LazyModel("ok", load)
    assert lazy.get() == "model" and lazy.get() == "model"
    assert calls == [1]
    assert lazy.drop() == "model" and lazy.model is None

    def broken() -> str:
        calls.append(2)
        raise FileNotFoundError("no such model")

    failing = LazyModel("broken", broken)
    for _ in range(2):
        with pytest.raises(FileNotFoundError):
            failing.get()
    assert calls == [1, 2]  # tried once, the error kept


@pytest.mark.parametrize(
    ("flags", "configured", "expected"),
    [
        ({"avx2", "amx_tile", "amx_int8"}, None, False),
        ({"avx2", "avx512f"}, None, True),
        ({"avx2", "amx_tile"}, True, True),
        ({"avx2"}, False, False),
    ],
)
def test_extra_buffer_types_follow_the_cpu_unless_configured(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], configured: bool | None, expected: bool
) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    assert cpu.extra_buffer_types(configured) is expected


def test_cpu_flags_are_read_from_proc_cpuinfo() -> None:
    flags = cpu.cpu_flags()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        assert flags == frozenset()
        return
    if "flags" in text:
        assert flags and all(f in text for f in flags)
