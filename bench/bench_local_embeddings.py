"""Benchmark: LocalBackend's batched embeddings vs one text per onnxruntime call.

Embeds N short texts (default 10,000) twice in one process:

1. through ``LocalBackend.send``: requests of 1-3 texts each, all in flight at once
   (at most ``--concurrency``), gathered by the backend into padded batches;
2. one text per ``InferenceSession.run`` on the same ONNX model, tokenizer and
   thread count (tokenizing, pooling and normalising each text like the backend).

The two runs alternate in ``--rounds`` rounds (a slice of the texts each), so that
load from anything else on the machine falls on both alike. Prints a table and writes
bench/out/local_embeddings.json. Example::

    .venv/bin/python bench/bench_local_embeddings.py
    .venv/bin/python bench/bench_local_embeddings.py --n 2000   # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

_SUBJECTS = [
    "The delivery",
    "My order",
    "This laptop",
    "The support team",
    "The hotel room",
    "Our flight",
    "The new update",
    "The coffee",
    "This book",
    "The train",
]
_VERBS = ["was", "is", "seemed", "turned out", "felt"]
_ENDS = [
    "late again",
    "better than expected",
    "a bit noisy",
    "really helpful",
    "too expensive for what it is",
    "clean and quiet",
    "confusing at first",
    "exactly what I needed",
    "broken on arrival",
    "fine overall",
]


def texts(n: int, seed: int = 3) -> list[str]:
    """``n`` short varied sentences (6-16 words)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        base = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_ENDS)}"
        if rng.random() < 0.5:
            base += (
                f", and {rng.choice(_SUBJECTS).lower()} {rng.choice(_VERBS)} {rng.choice(_ENDS)}"
            )
        out.append(f"{base} (#{i}).")
    return out


MODEL = "all-minilm-l6-v2"


async def run_batched(backend: Any, items: list[str], concurrency: int) -> dict[str, Any]:
    """``items`` through LocalBackend in requests of 1-3 texts, all submitted at once."""
    rng = random.Random(len(items))
    groups: list[list[str]] = []
    i = 0
    while i < len(items):
        k = rng.randint(1, 3)
        groups.append(items[i : i + k])
        i += k
    gate = asyncio.Semaphore(concurrency)

    async def one(group: list[str]) -> list[list[float]]:
        body = {"model": MODEL, "input": group}
        async with gate:
            resp = await backend.send("/v1/embeddings", json.dumps(body).encode())
        assert resp.status_code == 200, resp.body
        return [d["embedding"] for d in json.loads(resp.body)["data"]]

    started = time.perf_counter()
    answers = await asyncio.gather(*(one(g) for g in groups))
    elapsed = time.perf_counter() - started
    vectors = np.array([v for a in answers for v in a], dtype=np.float32)
    return {"seconds": elapsed, "requests": len(groups), "vectors": vectors}


def run_one_by_one(model: Any, items: list[str]) -> dict[str, Any]:
    """``items`` one per ``session.run``, tokenized, pooled and normalised alike."""
    from batchd.backends.local.embeddings import pool

    started = time.perf_counter()
    vectors = []
    for text in items:
        enc = model.tokenizer.encode(text)
        ids = np.array([enc.ids], dtype=np.int64)
        mask = np.array([enc.attention_mask], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = model.session.run(None, feeds)[0]
        vectors.append(pool(hidden, mask)[0])
    return {
        "seconds": time.perf_counter() - started,
        "vectors": np.array(vectors, dtype=np.float32),
    }


async def run_all(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    from batchd.backends.local import LocalBackend, LocalModelsConfig
    from batchd.backends.local.embeddings import EmbeddingModel

    config = LocalModelsConfig.model_validate({"embeddings": {MODEL: {"n_threads": threads}}})
    backend = LocalBackend(config)
    single = EmbeddingModel(config.embeddings[MODEL])  # same session options and tokenizer
    await run_batched(backend, ["warm up"], 1)
    run_one_by_one(single, ["warm up"])
    items = texts(args.n)
    size = -(-len(items) // args.rounds)
    parts_b, parts_s = [], []
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        parts_b.append(await run_batched(backend, chunk, args.concurrency))
        parts_s.append(run_one_by_one(single, chunk))
    await backend.aclose()
    batched = {
        "seconds": sum(p["seconds"] for p in parts_b),
        "requests": sum(p["requests"] for p in parts_b),
        "vectors": np.concatenate([p["vectors"] for p in parts_b]),
    }
    baseline = {
        "seconds": sum(p["seconds"] for p in parts_s),
        "vectors": np.concatenate([p["vectors"] for p in parts_s]),
    }
    return {"batched": batched, "baseline": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="texts (default 10000)")
    parser.add_argument("--concurrency", type=int, default=256, help="requests in flight")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternate the two runs this many times (default 4)"
    )
    args = parser.parse_args()

    from batchd.backends.local.config import default_threads

    threads = args.threads or default_threads()
    load_before = os.getloadavg()[0]
    result = asyncio.run(run_all(args, threads))
    load_after = os.getloadavg()[0]
    batched, baseline = result["batched"], result["baseline"]
    rate_b = args.n / batched["seconds"]
    rate_s = args.n / baseline["seconds"]
    agree = float(np.min(np.sum(batched["vectors"] * baseline["vectors"], axis=1)))

    print(
        f"\n{args.n} texts, {threads} threads, {batched['requests']} requests of 1-3 texts, "
        f"concurrency {args.concurrency}, {args.rounds} rounds"
    )
    print(f"{'run':<40} {'seconds':>8} {'texts/s':>9}")
    print(f"{'LocalBackend (batched)':<40} {batched['seconds']:>8.2f} {rate_b:>9.1f}")
    print(f"{'one text per session.run':<40} {baseline['seconds']:>8.2f} {rate_s:>9.1f}")
    print(f"speed-up: {rate_b / rate_s:.2f}x   lowest cosine(batched, one-by-one): {agree:.6f}")
    print(f"load average (1 min) before/after: {load_before:.2f} / {load_after:.2f}")
    folder = Path(__file__).parent / "out"
    folder.mkdir(exist_ok=True)
    out = {
        "n": args.n,
        "threads": threads,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "requests": batched["requests"],
        "batched": {"seconds": batched["seconds"], "texts_per_s": rate_b},
        "baseline": {"seconds": baseline["seconds"], "texts_per_s": rate_s},
        "speedup": rate_b / rate_s,
        "min_cosine_agreement": agree,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    (folder / "local_embeddings.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
